"""Reference numbers for the image / MNIST-1D families: mlp, mlp_autoencoder, cnn, conv1d.

Models are checked against float64 numpy forwards (dense, direct convolution, max pooling), sizes
against hand formulas, batches against synthetic data whose pixels encode their labels, and
config errors against the fields they name. Tasks are built on small synthetic arrays, so most
tests need no downloaded data; the last ones read the real (cached) digits and MNIST-1D.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.tasks import SPLITS, Task, TaskConfig, _images, _nn
from lopt.tasks.autoencoder import MLPAutoencoder, MLPAutoencoderStatic
from lopt.tasks.cnn import CNN, CNNStatic
from lopt.tasks.conv1d import Conv1D, Conv1DStatic
from lopt.tasks.mlp import MLP, MLPStatic
from lopt.validate import ConfigError

pytestmark = pytest.mark.strict_promotion

FAMILIES = (MLP(), MLPAutoencoder(), CNN(), Conv1D())


# --- float64 numpy references --------------------------------------------------------------
NP_ACT = {
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "swish": lambda x: x / (1 + np.exp(-x)),
}


def np64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def np_dense_stack(layers, x, act):
    """Dense layers with ``act`` between them, none after the last."""
    for i, p in enumerate(layers):
        x = x @ p["w"] + p["b"]
        if i < len(layers) - 1:
            x = NP_ACT[act](x)
    return x


def np_conv(x, w, b, stride):
    """Direct 'SAME' convolution (TF padding: total max((out-1)s + k - n, 0), low half first),
    channels last, any number of spatial dims, by explicit sums over kernel offsets."""
    kernel, spatial = w.shape[:-2], x.shape[1:-1]
    out = [-(-n // stride) for n in spatial]
    pads = [max((o - 1) * stride + k - n, 0) for o, k, n in zip(out, kernel, spatial)]
    xp = np.pad(x, [(0, 0)] + [(p // 2, p - p // 2) for p in pads] + [(0, 0)])
    y = np.zeros((x.shape[0], *out, w.shape[-1]))
    for pos in np.ndindex(*out):
        for off in np.ndindex(*kernel):
            idx = tuple(p * stride + o for p, o in zip(pos, off))
            y[(slice(None), *pos)] += xp[(slice(None), *idx)] @ w[off]  # (B, C_in) @ (C_in, C_out)
    return y + b


def np_max_pool(x):
    """2x2 / stride 2 max pool; a window hanging over an odd edge takes the max of what it covers."""
    bsz, h, w, c = x.shape
    y = np.zeros((bsz, -(-h // 2), -(-w // 2), c))
    for i, j in np.ndindex(*y.shape[1:3]):
        y[:, i, j] = x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(1, 2))
    return y


def np_xent(logits, y):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.mean(logp[np.arange(len(y)), y])


# --- synthetic tasks -------------------------------------------------------------------------
def fake_data(dataset, image_size, n=300):
    """Splits where row i has label i % 10 and every pixel equal to i % 256 (so batches are checkable);
    mnist1d rows are float vectors whose first entry is the label."""
    i = np.arange(n)
    y = (i % 10).astype(np.int32)
    if dataset == "mnist1d":
        x = np.random.default_rng(0).normal(size=(n, 40)).astype(np.float32)
        x[:, 0] = y
    else:
        x = np.broadcast_to((i % 256).astype(np.uint8)[:, None, None], (n, image_size, image_size))
    return {s: {"x": jnp.asarray(x), "y": jnp.asarray(y)} for s in SPLITS}


def fake_task(family, static, init_scale=1.0):
    return Task(
        dynamic={"init_scale": jnp.float32(init_scale)},
        data=fake_data(static.dataset, getattr(static, "image_size", None)),
        family=family,
        static=static,
    )


def test_param_counts_match_hand_formulas():
    cases = [
        # digits 8x8 -> 32 -> 16 -> 10: (64+1)32 + (32+1)16 + (16+1)10
        (MLP(), MLPStatic("digits", 8, (32, 16), "relu", 32), 2080 + 528 + 170),
        # mnist1d 40 -> 16 -> 10
        (MLP(), MLPStatic("mnist1d", None, (16,), "tanh", 32), 41 * 16 + 17 * 10),
        # 64 -> 32 -> 2 and back 2 -> 32 -> 64
        (
            MLPAutoencoder(),
            MLPAutoencoderStatic("digits", 8, (32,), 2, "relu", 32),
            65 * 32 + 33 * 2 + 3 * 32 + 33 * 64,
        ),
        # 3x3 convs 1 -> 4 -> 8, head 8 -> 10
        (CNN(), CNNStatic("mnist", 14, (4, 8), "pool", "relu", 32), 10 * 4 + 37 * 8 + 9 * 10),
        # k=5 convs 1 -> 8 -> 8, length 40 -> 20 -> 10, head 80 -> 10
        (Conv1D(), Conv1DStatic("mnist1d", (8, 8), 5, "relu", 32), 6 * 8 + 41 * 8 + 81 * 10),
    ]
    for family, static, expected in cases:
        assert static.num_params() == expected
        assert fake_task(family, static).num_params() == expected


def test_multiply_adds_match_hand_formulas():
    # pool: conv at 14x14 (1 -> 4), pool to 7, conv at 7x7 (4 -> 8); head 8 -> 10; batch 2
    assert CNNStatic("mnist", 14, (4, 8), "pool", "relu", 2).macs() == 2 * (196 * 9 * 4 + 49 * 9 * 32 + 80)
    # stride: conv outputs 7x7 then 4x4
    assert CNNStatic("mnist", 14, (4, 8), "stride", "relu", 2).macs() == 2 * (49 * 9 * 4 + 16 * 9 * 32 + 80)
    assert MLPStatic("digits", 8, (32,), "relu", 4).macs() == 4 * (64 * 32 + 32 * 10)
    assert MLPAutoencoderStatic("digits", 8, (32,), 2, "relu", 4).macs() == 4 * 2 * (64 * 32 + 32 * 2)
    assert Conv1DStatic("mnist1d", (8, 8), 5, "relu", 2).macs() == 2 * (20 * 5 * 8 + 10 * 5 * 64 + 80 * 10)


@pytest.mark.parametrize("nd,size,stride", [(2, 5, 1), (2, 5, 2), (2, 6, 2), (1, 9, 2), (1, 8, 1)])
def test_conv_matches_direct_numpy_convolution(nd, size, stride):
    kernel = (3, 3) if nd == 2 else (5,)
    p = _nn.conv_init(jax.random.key(1), kernel, 3, 4)
    p["b"] = jnp.arange(4, dtype=jnp.float32) / 10
    x = jax.random.normal(jax.random.key(2), (2, *(size,) * nd, 3))
    want = np_conv(*np64((x, p["w"], p["b"])), stride)
    np.testing.assert_allclose(_images.conv(p, x, stride), want, rtol=1e-5, atol=1e-5)
    with jax.numpy_rank_promotion("allow"):  # _nn.conv adds its bias by rank promotion
        np.testing.assert_allclose(_nn.conv(p, x, stride), want, rtol=1e-5, atol=1e-5)  # = XLA's conv


@pytest.mark.parametrize("size", [4, 5])
def test_max_pool_matches_numpy(size):
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    np.testing.assert_array_equal(_images.max_pool(x), np_max_pool(np.asarray(x)))


@pytest.mark.parametrize("act", sorted(NP_ACT))
def test_mlp_forward_and_loss_match_numpy(act):
    family = MLP()
    task = fake_task(family, MLPStatic("mnist1d", None, (7, 5), act, 6), init_scale=1.3)
    params = task.init(jax.random.key(0))
    batch = task.batch(jax.random.key(1), "train")
    logits = np_dense_stack(np64(params), np64(batch["x"]), act)
    np.testing.assert_allclose(family.logits(params, batch["x"], task), logits, rtol=1e-5, atol=1e-5)
    want = np_xent(logits, np.asarray(batch["y"]))
    np.testing.assert_allclose(task.loss(params, None, batch), want, rtol=1e-5)


def test_autoencoder_reconstruction_and_mse_match_numpy():
    family = MLPAutoencoder()
    task = fake_task(family, MLPAutoencoderStatic("digits", 8, (6, 5), 3, "elu", 4))
    params = task.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (4, 64))
    p = np64(params)
    code = np_dense_stack(p["encoder"], np64(x), "elu")  # linear bottleneck
    recon = 1 / (1 + np.exp(-np_dense_stack(p["decoder"], code, "elu")))
    assert [layer["w"].shape for layer in params["decoder"]] == [(3, 5), (5, 6), (6, 64)]
    np.testing.assert_allclose(family.reconstruct(params, x, task), recon, rtol=1e-5, atol=1e-6)
    loss = task.loss(params, None, {"x": x})
    np.testing.assert_allclose(loss, np.mean((np64(x) - recon) ** 2), rtol=1e-5)
    assert 0.0 <= float(loss) <= 1.0


@pytest.mark.parametrize("downsample", ["stride", "pool"])
def test_cnn_forward_matches_numpy(downsample):
    family = CNN()
    task = fake_task(family, CNNStatic("digits", 8, (3, 2), downsample, "swish", 2))
    params = task.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (2, 7, 7, 1))  # odd side: exercises 'SAME' edges
    h = np64(x)
    for p in np64(params["convs"]):
        h = NP_ACT["swish"](np_conv(h, p["w"], p["b"], 1 if downsample == "pool" else 2))
        h = np_max_pool(h) if downsample == "pool" else h
    assert h.shape == (2, 2, 2, 2)  # 7 -> 4 -> 2 either way
    head = np64(params["head"])
    want = h.mean(axis=(1, 2)) @ head["w"] + head["b"]
    np.testing.assert_allclose(family.logits(params, x, task), want, rtol=1e-5, atol=1e-6)


def test_conv1d_forward_matches_numpy():
    family = Conv1D()
    task = fake_task(family, Conv1DStatic("mnist1d", (4, 3), 5, "gelu", 3))
    params = task.init(jax.random.key(0))
    batch = task.batch(jax.random.key(1), "test")
    h = np64(batch["x"])  # (3, 40, 1)
    for p in np64(params["convs"]):
        h = NP_ACT["gelu"](np_conv(h, p["w"], p["b"], 2))
    assert h.shape == (3, 10, 3)
    head = np64(params["head"])
    want = h.reshape(3, -1) @ head["w"] + head["b"]
    np.testing.assert_allclose(family.logits(params, batch["x"], task), want, rtol=1e-5, atol=1e-5)


def test_accuracy_is_the_hand_counted_fraction():
    # One hidden layer of width 10 on mnist1d with w1 = [I; 0], w2 = I and zero biases gives
    # logits = relu(x[:, :10]); rows chosen so argmaxes are 3, 1, 7, 7 against labels 3, 2, 7, 0.
    family = MLP()
    task = fake_task(family, MLPStatic("mnist1d", None, (10,), "relu", 4))
    eye = jnp.eye(10, dtype=jnp.float32)
    params = [
        {"w": jnp.concatenate([eye, jnp.zeros((30, 10), jnp.float32)]), "b": jnp.zeros(10, jnp.float32)},
        {"w": eye, "b": jnp.zeros(10, jnp.float32)},
    ]
    x = np.zeros((4, 40), np.float32)
    for row, col in enumerate([3, 1, 7, 7]):
        x[row, col] = 2.0
    batch = {"x": jnp.asarray(x), "y": jnp.asarray([3, 2, 7, 0], jnp.int32)}
    metrics = task.metrics(params, None, batch)
    assert float(metrics["accuracy"]) == 0.5
    want = np_xent(np.maximum(x[:, :10], 0), np.array([3, 2, 7, 0]))
    np.testing.assert_allclose(metrics["loss"], want, rtol=1e-6)


@pytest.mark.parametrize(
    "family,static,shape",
    [
        (MLP(), MLPStatic("mnist", 14, (8,), "relu", 5), (5, 196)),
        (MLPAutoencoder(), MLPAutoencoderStatic("fashion_mnist", 8, (8,), 2, "relu", 5), (5, 64)),
        (CNN(), CNNStatic("mnist", 14, (4, 4), "pool", "relu", 5), (5, 14, 14, 1)),
    ],
)
def test_image_batches_are_unit_float_rows_of_the_split(family, static, shape):
    batch = fake_task(family, static).batch(jax.random.key(3), "inner_valid")
    x = np.asarray(batch["x"])
    assert x.dtype == np.float32 and x.shape == shape
    assert x.min() >= 0.0 and x.max() <= 1.0
    flat = x.reshape(5, -1)
    np.testing.assert_array_equal(flat, flat[:, :1] * np.ones_like(flat))  # each row one constant pixel
    pixel = np.rint(flat[:, 0] * 255).astype(int)  # row i has pixel i % 256 and label i % 10
    np.testing.assert_allclose(flat[:, 0], pixel / 255, rtol=1e-6)
    if "y" in batch:
        assert batch["y"].dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(batch["y"]), pixel % 10)


def test_mnist1d_batches_keep_vectors_and_labels():
    batch = fake_task(Conv1D(), Conv1DStatic("mnist1d", (4,), 3, "relu", 6)).batch(jax.random.key(0), "train")
    assert batch["x"].shape == (6, 40, 1) and batch["x"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(batch["x"][:, 0, 0]), np.asarray(batch["y"]))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_init_scale_multiplies_every_weight(family):
    static = family.static_extremes()[0]
    key = jax.random.key(4)
    one, two = fake_task(family, static, 1.0).init(key), fake_task(family, static, 2.0).init(key)
    assert jax.tree.structure(one) == jax.tree.structure(two)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
        np.testing.assert_allclose(b, 2 * a, rtol=1e-6)  # w = N(0, 1) · s / sqrt(fan_in); biases 0
    scales = jax.vmap(lambda k: family.sample_dynamic(k, static)["init_scale"])(jax.random.split(key, 64))
    assert float(scales.min()) >= 0.5 and float(scales.max()) <= 2.0


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_samples_stay_within_budgets_and_extremes(family):
    small, large = family.static_extremes()
    for s in range(40):
        static = family.sample_static(jax.random.key(s))
        assert static.num_params() <= family.max_params and static.macs() <= family.max_macs
        assert small.num_params() <= static.num_params() <= large.num_params()
        assert static.dataset in family.datasets
    assert family.sample_static(jax.random.key(7)) == family.sample_static(jax.random.key(7))


def test_dataset_restriction_is_honoured():
    fam = MLP(datasets=("fashion_mnist",), image_sizes=(14,))
    keys = jax.random.split(jax.random.key(0), 20)
    sampled = {(s.dataset, s.image_size) for s in map(fam.sample_static, keys)}
    assert sampled == {("fashion_mnist", 14)}
    cnn = CNN(datasets=("digits",))
    assert {cnn.sample_static(k).image_size for k in jax.random.split(jax.random.key(1), 10)} == {8}
    assert MLP(datasets=("mnist1d",)).static_extremes()[1].image_size is None


@pytest.mark.parametrize(
    "make,field",
    [
        (lambda: MLP(datasets=("cifar10",)), "MLP.datasets"),
        (lambda: CNN(datasets=("mnist1d",)), "CNN.datasets"),
        (lambda: Conv1D(datasets=("mnist",)), "Conv1D.datasets"),
        (lambda: MLPAutoencoder(datasets=()), "MLPAutoencoder.datasets"),
        (lambda: CNN(image_sizes=(16,)), "CNN.image_sizes"),
        (lambda: MLP(widths=()), "MLP.widths"),
        (lambda: MLP(depths=(0,)), "MLP.depths"),
        (lambda: CNN(downsamples=("avg",)), "CNN.downsamples"),
        (lambda: Conv1D(kernel_sizes=(0,)), "Conv1D.kernel_sizes"),
        (lambda: MLP(activations=("softplus",)), "MLP.activations"),
        (lambda: MLP(init_scale=(2.0, 0.5)), "MLP.init_scale"),
        (lambda: MLP(max_params=500), "MLP.max_params"),
        (lambda: CNN(max_macs=10), "CNN.max_macs"),
        (lambda: MLPStatic("digits", 14, (8,), "relu", 32), "MLPStatic.image_size"),
        (lambda: MLPStatic("mnist1d", 8, (8,), "relu", 32), "MLPStatic.image_size"),
        (lambda: CNNStatic("mnist", 14, (4,), "avg", "relu", 32), "CNNStatic.downsample"),
        (lambda: MLPAutoencoderStatic("mnist", 14, (8,), 0, "relu", 32), "MLPAutoencoderStatic.bottleneck"),
        (lambda: Conv1DStatic("mnist1d", (4,), 3, "relu", 0), "Conv1DStatic.batch_size"),
    ],
)
def test_bad_config_raises_config_error_naming_the_field(make, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        make()


def test_unknown_dataset_error_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        CNN(datasets=("mnist", "cifar10"))
    for name in ("digits", "mnist", "fashion_mnist", "cifar10"):
        assert name in str(e.value)


# --- real (cached) data ----------------------------------------------------------------------
def _real_task(family, static):
    import lopt.data

    try:
        return family.task(TaskConfig(static, family.sample_dynamic(jax.random.key(0), static)))
    except lopt.data.DatasetMissingError as e:  # pragma: no cover - depends on the cache
        pytest.skip(str(e))


def test_real_digits_batch_is_unit_float_with_labels():
    task = _real_task(CNN(), CNNStatic("digits", 8, (4, 4), "stride", "relu", 64))
    batch = task.batch(jax.random.key(0), "train")
    x = np.asarray(batch["x"])
    assert x.shape == (64, 8, 8, 1) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5
    assert set(np.unique(np.asarray(batch["y"]))) <= set(range(10))
    np.testing.assert_allclose(x * 255, np.rint(x * 255), atol=1e-3)  # uint8 levels / 255


def test_real_mnist1d_batch_shape():
    task = _real_task(MLP(), MLPStatic("mnist1d", None, (16,), "relu", 32))
    batch = task.batch(jax.random.key(0), "test")
    assert batch["x"].shape == (32, 40) and batch["x"].dtype == jnp.float32
    assert 0.5 < float(jnp.std(batch["x"])) < 2.0  # standardised-scale signals
