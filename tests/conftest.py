"""Strict JAX for every test (docs/design.md habit 13), two CPU devices, and shared fixtures.

- Two host CPU devices (``--xla_force_host_platform_device_count=2``), set before jax is first
  imported, so sharding and multi-device code paths run in the plain test suite.
- Rank promotion raises everywhere.
- Dtype promotion is "strict" where the dependencies allow it: a test module opts in with
  ``pytestmark = pytest.mark.strict_promotion``. It cannot be global: optax 0.2.8 computes bias
  corrections as ``decay ** count`` with a Python float and an int32 counter (adam, adamw,
  nadamw, schedules), which strict promotion rejects, and almost every test trains with one.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=2"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()

import jax  # noqa: E402  (after XLA_FLAGS: the device count is read when the backend starts)
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "strict_promotion: run with jax_numpy_dtype_promotion='strict' (no implicit casts)"
    )


@pytest.fixture(autouse=True)
def _dtype_promotion(request):
    if request.node.get_closest_marker("strict_promotion") is None:
        yield
        return
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture
def key():
    return jax.random.key(0)
