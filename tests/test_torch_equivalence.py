"""lopt.torch against the JAX optimizers: 200 steps from the same params on the same gradients
give the same params to float32 rounding, for every shipped optimizer, every learned architecture
(at its initial theta) and Lookahead around them, with the compiled kernels and eagerly. The
tensors here have at most 40 entries (the small size class of `lopt.torch.kernels`; the scalar runs
eagerly); tests/test_torch.py compares compiled and eager on large tensors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt.optimizers.learned.registry import LEARNED

torch = pytest.importorskip("torch")
import lopt.torch  # noqa: E402

# One intra-op thread: these tensors are tiny, and on a busy 2-core machine torch's thread pool made
# each step ~20x slower (measured: 25 ms vs 1.2 ms per mlp step).
torch.set_num_threads(1)

# The problem: a few tensors (one a scalar) on a noisy quadratic, gradients and losses computed in
# numpy, so JAX and torch see the same numbers from the same params.
SHAPES = {"a_w": (8, 5), "b_b": (5,), "c_w": (5, 3), "d_s": ()}  # sorted: JAX's dict-leaf order
NAMES = sorted(SHAPES)
NUM_STEPS = 200  # the T given to horizon-aware architectures (and the length of the runs)

_rng = np.random.default_rng(0)
INIT = {k: _rng.normal(size=SHAPES[k]).astype(np.float32) for k in NAMES}
TARGET = {k: _rng.normal(size=SHAPES[k]).astype(np.float32) for k in NAMES}
NOISE = [{k: (0.3 * _rng.normal(size=SHAPES[k])).astype(np.float32) for k in NAMES} for _ in range(NUM_STEPS)]


def grads_and_loss(params: dict, t: int) -> tuple[dict, np.float32]:
    """Gradients of Σ_k (1+k)/2 ‖p_k − c_k‖² plus fixed noise at step t, and the loss Σ ‖p_k − c_k‖²."""
    grads = {
        k: (np.asarray(params[k], np.float32) - TARGET[k]) * np.float32(1 + i) + NOISE[t % NUM_STEPS][k]
        for i, k in enumerate(NAMES)
    }
    loss = sum(float(np.sum(np.square(np.asarray(params[k], np.float32) - TARGET[k]))) for k in NAMES)
    return grads, np.float32(loss)


def valid_loss(t: int) -> float | None:
    """A validation loss every 10th step (None otherwise), so the validation features move."""
    return float(1.0 + 0.5 * np.cos(t / 7.0)) if t % 10 == 0 else None


RTOL, ATOL = 2e-5, 2e-6  # observed: at most 2.4e-7 absolute (1-2 ulp) after 200 steps


def jax_transform(learned, theta):
    if getattr(learned, "needs_num_steps", False):
        return optax.with_extra_args_support(learned.transform(theta, num_steps=NUM_STEPS))
    return optax.with_extra_args_support(learned.transform(theta))


def run_jax(tx, steps=NUM_STEPS) -> dict:
    params = {k: jnp.asarray(v) for k, v in INIT.items()}
    state = tx.init(params)
    update = jax.jit(lambda g, s, p, loss, valid: tx.update(g, s, p, loss=loss, valid_loss=valid))
    for t in range(steps):
        grads, loss = grads_and_loss(params, t)
        valid = valid_loss(t)
        valid = np.float32(np.nan if valid is None else valid)  # non-finite: "no new value"
        updates, state = update({k: jnp.asarray(g) for k, g in grads.items()}, state, params, loss, valid)
        params = optax.apply_updates(params, updates)
    return {k: np.asarray(v) for k, v in params.items()}


def torch_params() -> list:
    return [torch.tensor(INIT[k]).requires_grad_() for k in NAMES]


def run_torch(opt, params, start=0, steps=NUM_STEPS) -> dict:
    for t in range(start, start + steps):
        grads, loss = grads_and_loss({k: p.detach().numpy() for k, p in zip(NAMES, params)}, t)
        for k, p in zip(NAMES, params):
            p.grad = torch.tensor(grads[k])
        opt.step(loss=torch.tensor(loss), valid_loss=valid_loss(t))
    return {k: p.detach().numpy().copy() for k, p in zip(NAMES, params)}


def assert_close(a: dict, b: dict) -> None:
    for k in NAMES:
        np.testing.assert_allclose(a[k], b[k], rtol=RTOL, atol=ATOL, err_msg=k)


def moved(a: dict) -> float:
    return max(float(np.max(np.abs(a[k] - INIT[k]))) for k in NAMES)


COMPILE = pytest.mark.parametrize("compile", [True, False], ids=["compiled", "eager"])


@COMPILE
@pytest.mark.parametrize("name", sorted(lopt.PRETRAINED))
def test_pretrained_matches_jax(name, compile):
    learned, theta = lopt.load_pretrained(name)
    expected = run_jax(jax_transform(learned, theta))
    params = torch_params()
    got = run_torch(
        lopt.torch.LearnedOptimizer(params, name=name, num_steps=NUM_STEPS, compile=compile), params
    )
    assert moved(expected) > 0.1  # the run does something
    assert_close(got, expected)


@COMPILE
@pytest.mark.parametrize("arch", sorted(LEARNED))
def test_architecture_matches_jax(arch, compile):
    learned = LEARNED[arch]()
    expected = run_jax(jax_transform(learned, learned.init(jax.random.key(0))))
    params = torch_params()
    opt = lopt.torch.LearnedOptimizer(params, architecture=arch, num_steps=NUM_STEPS, compile=compile)
    got = run_torch(opt, params)
    assert moved(expected) > 0.1
    assert_close(got, expected)


def test_every_architecture_has_a_torch_rule():
    assert set(lopt.torch.RULES) == set(LEARNED)


@COMPILE
@pytest.mark.parametrize("name", sorted(lopt.PRETRAINED))
def test_lookahead_matches_jax(name, compile):
    learned, theta = lopt.load_pretrained(name)
    expected = run_jax(lopt.lookahead(jax_transform(learned, theta), k=5, alpha=0.5))
    params = torch_params()
    inner = lopt.torch.LearnedOptimizer(params, name=name, num_steps=NUM_STEPS, compile=compile)
    got = run_torch(lopt.torch.Lookahead(inner, k=5, alpha=0.5), params)
    assert_close(got, expected)


def test_lookahead_around_sgdm_matches_jax():
    learned = LEARNED["sgdm"]()
    expected = run_jax(
        lopt.lookahead(jax_transform(learned, learned.init(jax.random.key(0))), k=3, alpha=0.3)
    )
    params = torch_params()
    got = run_torch(
        lopt.torch.Lookahead(lopt.torch.LearnedOptimizer(params, architecture="sgdm"), k=3, alpha=0.3), params
    )
    assert_close(got, expected)
