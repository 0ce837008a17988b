"""Reference tests for the 2-D test functions and the linear / logistic regression families."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt.data
from lopt.tasks.base import TaskConfig
from lopt.tasks.functions2d import FUNCTIONS, Functions2D, Functions2DStatic
from lopt.tasks.regression import (
    SHAPES,
    LinearRegression,
    LinearRegressionStatic,
    LogisticRegression,
    LogisticRegressionStatic,
)
from lopt.validate import ConfigError

pytestmark = pytest.mark.strict_promotion

# ---------------------------------------------------------------------------------------------
# functions2d


def _f(name, x, y):
    return float(FUNCTIONS[name].fn(jnp.array([x, y], jnp.float32)))


def _grad(name, x, y):
    return np.asarray(jax.grad(FUNCTIONS[name].fn)(jnp.array([x, y], jnp.float32)))


# (function, x, y, value) worked by hand from the definitions.
HAND_VALUES = [
    ("rosenbrock", 0.0, 0.0, 1.0),
    ("rosenbrock", -1.0, 1.0, 4.0),
    ("rosenbrock", 2.0, 1.0, 901.0),  # 1 + 100 * (1 - 4)^2
    ("beale", 0.0, 0.0, 14.203125),  # 1.5^2 + 2.25^2 + 2.625^2
    ("beale", 2.0, -1.0, 13.203125),  # (-2.5)^2 + 2.25^2 + (-1.375)^2
    ("booth", 0.0, 0.0, 74.0),
    ("booth", 1.0, 1.0, 20.0),  # (-4)^2 + (-2)^2
    ("himmelblau", 0.0, 0.0, 170.0),
    ("himmelblau", 1.0, 1.0, 106.0),  # 9^2 + 5^2
    ("saddle", 0.0, 0.0, 0.0),
    ("saddle", 1.0, 2.0, 1.0),  # 1 - 4 + 16/4
    ("saddle", 0.0, 1.0, -0.75),
    ("rastrigin", 1.0, 1.0, 2.0),  # 20 + 2 (1 - 10)
    ("rastrigin", 0.5, 0.5, 40.5),  # 20 + 2 (0.25 + 10)
    ("rastrigin", 0.5, 0.0, 20.25),
]


@pytest.mark.parametrize("name,x,y,value", HAND_VALUES)
def test_function_values_by_hand(name, x, y, value):
    np.testing.assert_allclose(_f(name, x, y), value, rtol=1e-6, atol=1e-5)


def test_gradients_by_hand():
    # Rosenbrock: ∂x = -2(1 - x) - 400 x (y - x^2), ∂y = 200 (y - x^2).
    np.testing.assert_allclose(_grad("rosenbrock", 0.0, 0.0), [-2.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(_grad("rosenbrock", 2.0, 1.0), [2402.0, -600.0], rtol=1e-6)
    # Booth: ∇ = (2(x + 2y - 7) + 4(2x + y - 5), 4(x + 2y - 7) + 2(2x + y - 5)); at 0: (-34, -38).
    np.testing.assert_allclose(_grad("booth", 0.0, 0.0), [-34.0, -38.0], rtol=1e-6)
    # Saddle: ∇ = (2x, -2y + y^3), Hessian at the origin diag(2, -2).
    np.testing.assert_allclose(_grad("saddle", 1.0, 2.0), [2.0, 4.0], rtol=1e-6)
    hess = jax.hessian(FUNCTIONS["saddle"].fn)(jnp.zeros((2,), jnp.float32))
    np.testing.assert_allclose(np.asarray(hess), [[2.0, 0.0], [0.0, -2.0]], atol=1e-6)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_known_minima(name):
    fn = FUNCTIONS[name]
    for x, y in fn.minimizers:
        np.testing.assert_allclose(_f(name, x, y), fn.minimum, atol=1e-4)
        # float32 rounding of the non-integer minimizers leaves gradients of order 1e-5.
        np.testing.assert_allclose(_grad(name, x, y), [0.0, 0.0], atol=2e-3)
    # No point of a 401 x 401 grid over the domain goes below the tabulated minimum.
    (x_lo, x_hi), (y_lo, y_hi) = fn.domain
    xs, ys = np.meshgrid(np.linspace(x_lo, x_hi, 401), np.linspace(y_lo, y_hi, 401))
    pts = jnp.asarray(np.stack([xs.ravel(), ys.ravel()], -1), jnp.float32)  # (401^2, 2)
    values = np.asarray(jax.vmap(fn.fn)(pts))
    assert values.min() >= fn.minimum - 1e-4


def test_functions2d_sampling_in_domain_and_reproducible():
    fam = Functions2D(noise=(0.0, 0.5))
    keys = jax.random.split(jax.random.key(0), 2000)
    for name, fn in FUNCTIONS.items():
        dyn = jax.vmap(lambda k: fam.sample_dynamic(k, Functions2DStatic(name)))(keys)
        xy0 = np.asarray(dyn["xy0"])  # (2000, 2)
        for axis, (lo, hi) in enumerate(fn.domain):
            assert lo <= xy0[:, axis].min() < lo + 0.02 * (hi - lo)  # uniform: covers the domain
            assert hi - 0.02 * (hi - lo) < xy0[:, axis].max() <= hi
        noise = np.asarray(dyn["noise"])
        assert noise.min() >= 0.0 and noise.max() <= 0.5
    cfg_a, cfg_b = fam.sample(jax.random.key(7)), fam.sample(jax.random.key(7))
    assert cfg_a.static == cfg_b.static
    np.testing.assert_array_equal(cfg_a.dynamic["xy0"], cfg_b.dynamic["xy0"])
    task = fam.task(cfg_a)
    np.testing.assert_array_equal(task.init(jax.random.key(1))["xy"], cfg_a.dynamic["xy0"])
    assert task.num_params() == 2


def test_functions2d_gradient_noise():
    fam = Functions2D()
    dyn = {"xy0": jnp.array([0.5, -1.0], jnp.float32), "noise": jnp.array(0.3, jnp.float32)}
    task = fam.task(TaskConfig(Functions2DStatic("himmelblau"), dyn))
    params = task.init(jax.random.key(0))
    key = jax.random.key(3)
    train = task.batch(key, "train")
    np.testing.assert_array_equal(train["xi"], jax.random.normal(key, (2,), jnp.float32))
    clean_grad = _grad("himmelblau", 0.5, -1.0)
    value, grads = jax.value_and_grad(task.loss)(params, key, train)
    np.testing.assert_allclose(value, _f("himmelblau", 0.5, -1.0), rtol=1e-6)  # value is exact f
    expected = clean_grad + 0.3 * np.asarray(train["xi"])
    np.testing.assert_allclose(grads["xy"], expected, rtol=1e-5, atol=1e-5)
    for split in ("inner_valid", "outer_valid", "test"):
        batch = task.batch(key, split)
        np.testing.assert_array_equal(batch["xi"], np.zeros(2))
        np.testing.assert_allclose(jax.grad(task.loss)(params, key, batch)["xy"], clean_grad, rtol=1e-6)


def test_functions2d_config_errors():
    with pytest.raises(ConfigError, match="Functions2DStatic.function"):
        Functions2DStatic("sphere")
    with pytest.raises(ConfigError, match=r"Functions2D.noise.*0.0 <= a <= b <= 100.0"):
        Functions2D(noise=(1.0, 0.5))
    with pytest.raises(ConfigError, match="Functions2D.functions contains 'ackley'"):
        Functions2D(functions=("booth", "ackley"))
    saddle_minima = (((0.0, math.sqrt(2)), (0.0, -math.sqrt(2))), -1.0)
    assert Functions2D().minimum(Functions2DStatic("saddle")) == saddle_minima


# ---------------------------------------------------------------------------------------------
# regression


def _task(family, static, **dynamic):
    dyn = {k: jnp.asarray(v, jnp.float32) for k, v in dynamic.items()}
    return family.task(TaskConfig(static, dyn))


@pytest.mark.parametrize(
    "dataset,num_params",
    [("diabetes", 10 + 1), ("breast_cancer", 30 * 2 + 2), ("wine", 13 * 3 + 3), ("iris", 4 * 3 + 3)],
)
def test_shapes_match_data_and_param_counts(dataset, num_params):
    d, c = SHAPES[dataset]
    arrays = lopt.data.device_arrays(dataset)
    assert arrays["train"]["x"].shape[1] == d
    if dataset == "diabetes":
        fam, static = LinearRegression(), LinearRegressionStatic(dataset, 16)
        task = _task(fam, static, init_scale=1.0, feature_noise=0.0, l2=0.0)
    else:
        assert lopt.data.load(dataset).num_classes == c
        fam, static = LogisticRegression(), LogisticRegressionStatic(dataset, 16)
        task = _task(fam, static, init_scale=1.0, feature_noise=0.0)
    assert task.num_params() == num_params
    # Batch shapes, dtypes, and that a minibatch is made of rows of the split.
    batch = task.batch(jax.random.key(0), "inner_valid")
    assert batch["x"].shape == (16, d) and batch["x"].dtype == jnp.float32
    assert batch["y"].shape == (16,) and batch["y"].dtype == arrays["train"]["y"].dtype
    rows = np.asarray(arrays["inner_valid"]["x"])
    for row in np.asarray(batch["x"]):
        assert np.any(np.all(rows == row, axis=1))


def test_full_batch_and_feature_noise():
    fam = LogisticRegression(feature_noise=(0.0, 0.5))
    task = _task(fam, LogisticRegressionStatic("wine", None), init_scale=1.0, feature_noise=0.25)
    arrays = lopt.data.device_arrays("wine")
    for split in ("inner_valid", "outer_valid", "test"):  # noiseless full splits
        batch = task.batch(jax.random.key(0), split)
        np.testing.assert_array_equal(batch["x"], arrays[split]["x"])
        np.testing.assert_array_equal(batch["y"], arrays[split]["y"])
    key = jax.random.key(5)
    train = task.batch(key, "train")
    eps = jax.random.normal(jax.random.split(key)[1], arrays["train"]["x"].shape, jnp.float32)
    np.testing.assert_allclose(train["x"], arrays["train"]["x"] + 0.25 * eps, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(train["y"], arrays["train"]["y"])
    # Noise off (the default): the full train batch is the train split, whatever the dynamic value.
    static = LogisticRegressionStatic("wine", None)
    quiet = _task(LogisticRegression(), static, init_scale=1.0, feature_noise=0.25)
    np.testing.assert_array_equal(quiet.batch(key, "train")["x"], arrays["train"]["x"])


def _ridge64(x, y, l2):
    """Closed-form minimizer of mean((x w + b - y)^2) + l2 ||w||^2 in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    xm, ym = x.mean(0), y.mean()
    xc, yc = x - xm, y - ym
    n, d = x.shape
    if l2 == 0.0:
        w = np.linalg.lstsq(np.c_[x, np.ones(n)], y, rcond=None)[0][:d]
    else:
        w = np.linalg.solve(xc.T @ xc / n + l2 * np.eye(d), xc.T @ yc / n)
    b = ym - xm @ w
    loss = np.mean((x @ w + b - y) ** 2) + l2 * np.sum(w**2)
    return w, b, loss


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_linear_regression_closed_form_and_gradient_descent(l2):
    fam = LinearRegression()
    task = _task(fam, LinearRegressionStatic("diabetes", None), init_scale=1.0, feature_noise=0.0, l2=l2)
    batch = task.batch(jax.random.key(0), "train")  # the full, noiseless train split
    x, y = np.asarray(batch["x"], np.float64), np.asarray(batch["y"], np.float64)
    w, b, loss_star = _ridge64(x, y, l2)
    params_star = {"w": jnp.asarray(w[:, None], jnp.float32), "b": jnp.asarray([b], jnp.float32)}
    key = jax.random.key(1)
    np.testing.assert_allclose(task.loss(params_star, key, batch), loss_star, rtol=1e-5)
    grads = jax.grad(task.loss)(params_star, key, batch)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) < 1e-3 * max(1.0, loss_star)
    params0 = task.init(jax.random.key(2))
    assert float(task.loss(params0, key, batch)) > loss_star
    # Full-batch gradient descent with step 1/L, L = 2 λ_max([X 1]ᵀ[X 1] / N) + 2 l2.
    xa = np.c_[x, np.ones(len(x))]
    lr = 1.0 / (2.0 * np.linalg.eigvalsh(xa.T @ xa / len(x)).max() + 2.0 * l2)

    @jax.jit
    def descend(params):
        def step(p, _):
            g = jax.grad(task.loss)(p, key, batch)
            return jax.tree.map(lambda a, ga: a - jnp.float32(lr) * ga, p, g), None

        return jax.lax.scan(step, params, None, length=3000)[0]

    loss_gd = float(task.loss(descend(params0), key, batch))
    np.testing.assert_allclose(loss_gd, loss_star, rtol=1e-5)


def test_linear_regression_metrics_split_penalty():
    fam = LinearRegression()
    task = _task(fam, LinearRegressionStatic("diabetes", 4), init_scale=1.0, feature_noise=0.0, l2=0.5)
    params = {"w": jnp.full((10, 1), 0.1, jnp.float32), "b": jnp.array([2.0], jnp.float32)}
    batch = {"x": jnp.ones((4, 10), jnp.float32), "y": jnp.array([0.0, 1.0, 2.0, 3.0], jnp.float32)}
    # ŷ = 10 * 0.1 + 2 = 3 for every row; residuals (3, 2, 1, 0) -> mse 14/4; penalty 0.5 * 10 * 0.01.
    metrics = task.metrics(params, jax.random.key(0), batch)
    np.testing.assert_allclose(metrics["mse"], 3.5, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], 3.5 + 0.05, rtol=1e-6)


def test_logistic_loss_matches_float64_numpy():
    fam = LogisticRegression()
    task = _task(fam, LogisticRegressionStatic("breast_cancer", 32), init_scale=1.5, feature_noise=0.0)
    params = task.init(jax.random.key(0))
    batch = task.batch(jax.random.key(1), "test")
    w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    logits = np.asarray(batch["x"], np.float64) @ w + b  # (32, 2)
    logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    labels = np.asarray(batch["y"])
    expected = np.mean(logz - logits[np.arange(32), labels])
    metrics = task.metrics(params, jax.random.key(2), batch)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(task.loss(params, jax.random.key(2), batch), expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(logits.argmax(1) == labels), atol=1e-7)
    # init scale: LeCun normal times 1.5, so std(w) ≈ 1.5 / sqrt(30) (60 draws: loose bound).
    assert 0.5 * 1.5 / math.sqrt(30) < w.std() < 1.5 * 1.5 / math.sqrt(30)
    np.testing.assert_array_equal(b, np.zeros(2))


def test_logistic_accuracy_by_hand_count():
    fam = LogisticRegression()
    task = _task(fam, LogisticRegressionStatic("iris", 5), init_scale=1.0, feature_noise=0.0)
    params = {"w": jnp.eye(4, 3, dtype=jnp.float32), "b": jnp.zeros((3,), jnp.float32)}
    x = jnp.array([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0], [1, 5, 0, 0], [0, 0, 0, 9]], jnp.float32)
    y = jnp.array([0, 1, 0, 1, 2], jnp.int32)
    # Predictions 0, 1, 2, 1, 0 (all-zero logits: argmax takes the first) -> 3 of 5 right.
    metrics = task.metrics(params, jax.random.key(0), {"x": x, "y": y})
    np.testing.assert_allclose(metrics["accuracy"], 0.6, rtol=1e-6)
    # Loss by hand: rows 1, 2 have logits (1,0,0) / (0,2,0) ...; mean of logsumexp - true logit.
    e = math.e
    per_row = [
        math.log(e + 2) - 1,
        math.log(e**2 + 2) - 2,
        math.log(e**3 + 2) - 0,
        math.log(e + e**5 + 1) - 5,
        math.log(3.0),
    ]
    np.testing.assert_allclose(metrics["loss"], np.mean(per_row), rtol=1e-6)


def test_regression_sampling_space():
    fam = LinearRegression(l2=(1e-3, 1e-1), feature_noise=(0.0, 0.1))
    static = LinearRegressionStatic("diabetes", 32)
    dyn = jax.vmap(lambda k: fam.sample_dynamic(k, static))(jax.random.split(jax.random.key(0), 1000))
    for name, (lo, hi) in [("init_scale", (0.5, 2.0)), ("l2", (1e-3, 1e-1)), ("feature_noise", (0.0, 0.1))]:
        v = np.asarray(dyn[name])
        assert v.shape == (1000,) and lo <= v.min() and v.max() <= hi
    # Log-uniform: the median is near the geometric mean of the interval.
    assert 0.7 < np.median(np.asarray(dyn["init_scale"])) < 1.4
    assert np.asarray(LinearRegression(l2=(0.0, 0.0)).sample_dynamic(jax.random.key(0), static)["l2"]) == 0.0
    statics = {LogisticRegression().sample_static(jax.random.key(i)) for i in range(60)}
    assert {s.dataset for s in statics} == {"breast_cancer", "wine", "iris"}
    assert {s.batch_size for s in statics} == {16, 32, 64, None}
    small, large = LogisticRegression().static_extremes()
    assert (small.dataset, large.dataset) == ("iris", "breast_cancer")


def test_regression_config_errors():
    msg = r"LinearRegression.batch_sizes=0 is out of range: it must be in \[1, 100000\]"
    with pytest.raises(ConfigError, match=msg):
        LinearRegression(batch_sizes=(16, 0))
    with pytest.raises(ConfigError, match="LinearRegression.batch_sizes is empty"):
        LinearRegression(batch_sizes=())
    with pytest.raises(ConfigError, match="LogisticRegression.datasets contains 'diabetes'"):
        LogisticRegression(datasets=("iris", "diabetes"))
    with pytest.raises(ConfigError, match="LinearRegressionStatic.dataset='iris'"):
        LinearRegressionStatic("iris", 16)
    with pytest.raises(ConfigError, match="LogisticRegressionStatic.batch_size=-3"):
        LogisticRegressionStatic("wine", -3)
    with pytest.raises(ConfigError, match=r"LinearRegression.l2=\(0.0, 0.1\)"):
        LinearRegression(l2=(0.0, 0.1))
    with pytest.raises(ConfigError, match="LogisticRegression.init_scale"):
        LogisticRegression(init_scale=(0.0, 1.0))
    with pytest.raises(ConfigError, match="LogisticRegression.feature_noise"):
        LogisticRegression(feature_noise=(0.2, 0.1))
