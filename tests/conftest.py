"""Strict JAX for every test (STYLE.md item 13) and shared fixtures.

Rank promotion raises. Dtype promotion stays "standard": optax 0.2.8 itself computes
``decay ** count`` with a Python float and an int32 counter, which strict promotion rejects.
"""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)
