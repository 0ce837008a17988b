"""Checkpoints: bitwise round trips, keep-K, clear errors on corrupt or mismatched files, SIGKILL safety."""

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from lopt import checkpoint
from lopt.checkpoint import CheckpointError, CheckpointManager


class Inner(NamedTuple):
    mu: jax.Array
    count: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Estimator:
    perturbation: jax.Array
    horizon: jax.Array
    name: str = dataclasses.field(default="pes", metadata={"static": True})


class Outer(NamedTuple):
    theta: dict
    opt: Inner
    keys: list
    step: jax.Array
    estimator: Estimator
    extras: dict


def _state(key, fill=None):
    """A nested outer state; ``fill`` gives a same-structure template with other values."""
    k_theta, k_key = jax.random.split(key)
    w = jax.random.normal(k_theta, (3, 4))
    special = jnp.asarray([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.0], jnp.float32)
    # A NaN with a non-default payload: only a bitwise copy keeps it.
    special = special.at[0].set(jax.lax.bitcast_convert_type(jnp.uint32(0x7FC0_1234), jnp.float32))
    state = Outer(
        theta={"w": w, "w_bf16": w.astype(jnp.bfloat16), "special": special},
        opt=Inner(mu=jnp.asarray([1.5, -2.25], jnp.bfloat16), count=jnp.asarray(41, jnp.int32)),
        keys=[jax.random.key(7), jax.random.split(k_key, 3), jax.random.key(3, impl="rbg")],
        step=jnp.asarray(12345, jnp.int32),
        estimator=Estimator(jnp.linspace(-1, 1, 8).reshape(2, 4), jnp.asarray([10, 200], jnp.int32)),
        extras={"np": np.arange(5, dtype=np.int64), "lr": 0.125, "n": 9, "weak": jnp.asarray(2.0)},
    )
    if fill is None:
        return state

    def refill(x):
        if isinstance(x, float | int):
            return type(x)(fill)
        return x if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x * 0 + fill

    return jax.tree.map(refill, state)


def _bits(x):
    """(type name, dtype, shape, raw bytes) of a leaf; PRNG keys through their key data."""
    dtype = str(getattr(x, "dtype", type(x).__name__))
    if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    a = np.asarray(x)
    return type(x).__name__, dtype, a.shape, a.tobytes()


def _assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for i, (x, y) in enumerate(zip(jax.tree.leaves(a), jax.tree.leaves(b))):
        assert _bits(x) == _bits(y), f"leaf {i}: {x!r} != {y!r}"


CONFIG = {"estimator": "pes", "outer": {"lr": 3e-4, "clip": 1.0}, "tasks": ["quadratic", "mlp"], "seed": 0}


def test_round_trip_is_bitwise_identical(tmp_path, key):
    state = _state(key)
    path = checkpoint.save(tmp_path, 12345, state, CONFIG)
    assert path == tmp_path / "ckpt_00012345.safetensors"
    restored, config, step = checkpoint.restore(path, _state(key, fill=5))
    _assert_bitwise_equal(restored, state)
    assert config == CONFIG and step == 12345
    assert restored.keys[0].dtype == jax.random.key(0).dtype
    assert restored.keys[2].dtype == jax.random.key(0, impl="rbg").dtype
    assert restored.extras["weak"].weak_type and not restored.theta["w"].weak_type
    assert isinstance(restored.extras["n"], int) and isinstance(restored.extras["np"], np.ndarray)
    # Restored keys generate the same random numbers.
    for new, old in [(restored.keys[0], state.keys[0]), (restored.keys[1][2], state.keys[1][2])]:
        np.testing.assert_array_equal(jax.random.normal(new, (4,)), jax.random.normal(old, (4,)))
    np.testing.assert_array_equal(
        jax.random.bits(restored.keys[2], (3,)), jax.random.bits(state.keys[2], (3,))
    )


def test_restore_from_abstract_template(tmp_path, key):
    # Only jax leaves: eval_shape would turn numpy int64 and Python floats into int32 / float32.
    state = _state(key)._replace(extras={"weak": jnp.asarray(2.0)})
    checkpoint.save(tmp_path, 3, state, CONFIG)
    template = jax.eval_shape(lambda: state)
    restored, _, _ = checkpoint.restore_latest(tmp_path, template)
    assert isinstance(restored.theta["w"], jax.Array)
    np.testing.assert_array_equal(jax.random.key_data(restored.keys[1]), jax.random.key_data(state.keys[1]))
    assert restored.extras["weak"].weak_type


def test_file_is_plain_safetensors(tmp_path, key):
    from safetensors import safe_open

    state = _state(key)
    path = checkpoint.save(tmp_path, 1, state, CONFIG)
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata()
        np.testing.assert_array_equal(f.get_tensor(".theta['w']"), np.asarray(state.theta["w"]))
        assert f.get_tensor(".keys[1]").shape == (3, 2)
    assert metadata["format"] == "lopt.checkpoint" and metadata["format_version"] == "1"
    assert metadata["step"] == "1" and len(metadata["sha256"]) == 64
    assert (
        metadata["prng_keys"] == '{".keys[0]": "threefry2x32", ".keys[1]": "threefry2x32", ".keys[2]": "rbg"}'
    )


def test_keep_retains_exactly_the_last_k(tmp_path):
    state = {"x": jnp.zeros(3)}
    for step in range(1, 8):
        checkpoint.save(tmp_path, step * 10, state, keep=3)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "ckpt_00000050.safetensors",
        "ckpt_00000060.safetensors",
        "ckpt_00000070.safetensors",
    ]
    assert checkpoint.latest(tmp_path) == tmp_path / "ckpt_00000070.safetensors"
    # The checkpoint just written is never deleted, even when it is not among the latest K.
    checkpoint.save(tmp_path, 5, state, keep=2)
    assert [checkpoint.restore(p, state)[2] for p in checkpoint.list_checkpoints(tmp_path)] == [5, 60, 70]
    checkpoint.save(tmp_path, 80, state, keep=None)
    assert len(checkpoint.list_checkpoints(tmp_path)) == 4
    assert sorted(os.listdir(tmp_path)) == [p.name for p in checkpoint.list_checkpoints(tmp_path)]


def test_steps_beyond_eight_digits_sort_numerically(tmp_path):
    checkpoint.save(tmp_path, 99_999_999, {"x": jnp.zeros(1)})
    checkpoint.save(tmp_path, 100_000_000, {"x": jnp.ones(1)})
    assert checkpoint.latest(tmp_path).name == "ckpt_100000000.safetensors"


def test_truncated_file_names_file_and_cause(tmp_path, key):
    state = _state(key)
    path = checkpoint.save(tmp_path, 1, state, CONFIG)
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 1, 100, 5, 0):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match="truncated") as info:
            checkpoint.restore(path, state)
        assert str(path) in str(info.value) and info.value.path == str(path)


def test_flipped_payload_byte_is_a_checksum_error(tmp_path, key):
    state = _state(key)
    path = checkpoint.save(tmp_path, 1, state, CONFIG)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # inside the last tensor: the file still parses
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch") as info:
        checkpoint.restore(path, state)
    assert str(path) in str(info.value)


def test_edited_header_value_is_a_checksum_error(tmp_path, key):
    state = _state(key)
    path = checkpoint.save(tmp_path, 1, state, CONFIG)
    data = path.read_bytes()
    assert data.count(b'\\"seed\\": 0') == 1
    path.write_bytes(data.replace(b'\\"seed\\": 0', b'\\"seed\\": 1'))  # still valid JSON
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        checkpoint.restore(path, state)


def test_bad_header_and_foreign_and_future_files(tmp_path, key):
    state = _state(key)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes((20).to_bytes(8, "little") + b"{not json at all!!!}")
    with pytest.raises(CheckpointError, match="bad header"):
        checkpoint.restore(garbage, state)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="bad header"):
        checkpoint.restore(huge, state)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, foreign)
    with pytest.raises(CheckpointError, match="not a lopt checkpoint"):
        checkpoint.restore(foreign, state)
    path = checkpoint.save(tmp_path, 1, state, CONFIG)
    path.write_bytes(path.read_bytes().replace(b'"format_version":"1"', b'"format_version":"7"'))
    with pytest.raises(CheckpointError, match="format version mismatch: the file has version '7'"):
        checkpoint.restore(path, state)
    with pytest.raises(CheckpointError, match="cannot be read: No such file"):
        checkpoint.restore(tmp_path / "missing.safetensors", state)


def test_template_mismatch_names_the_leaf(tmp_path, key):
    state = _state(key)
    path = checkpoint.save(tmp_path, 1, state, CONFIG)
    wrong_shape = state._replace(theta={**state.theta, "w": jnp.zeros((4, 3))})
    with pytest.raises(
        CheckpointError, match=r"\.theta\['w'\]: expected float32\[4, 3\], found float32\[3, 4\]"
    ):
        checkpoint.restore(path, wrong_shape)
    wrong_dtype = state._replace(opt=state.opt._replace(mu=jnp.zeros(2, jnp.float32)))
    with pytest.raises(CheckpointError, match=r"\.opt\.mu: expected float32\[2\], found bfloat16\[2\]"):
        checkpoint.restore(path, wrong_dtype)
    wrong_impl = state._replace(keys=[jax.random.key(0, impl="rbg"), *state.keys[1:]])
    with pytest.raises(CheckpointError, match=r"\.keys\[0\]: expected key<rbg>\[\], found key<fry>\[\]"):
        checkpoint.restore(path, wrong_impl)
    extra = state._replace(theta={**state.theta, "b": jnp.zeros(3)})
    with pytest.raises(
        CheckpointError, match=r"missing leaves \[\".theta\['b'\]\"\], unexpected leaves \[\]"
    ):
        checkpoint.restore(path, extra)
    fewer = state._replace(keys=state.keys[:2])
    with pytest.raises(CheckpointError, match=r"missing leaves \[\], unexpected leaves \['\.keys\[2\]'\]"):
        checkpoint.restore(path, fewer)


def test_config_mismatch_names_the_keys(tmp_path, key):
    state = _state(key)
    path = checkpoint.save(tmp_path, 1, state, CONFIG)
    checkpoint.restore(path, state, expect_config={**CONFIG, "tasks": ("quadratic", "mlp")})  # tuple == list
    expected = {**CONFIG, "outer": {"lr": 1e-3, "clip": 1.0}, "seed": 0, "new": 1}
    del expected["estimator"]
    with pytest.raises(CheckpointError, match="config mismatch") as info:
        checkpoint.restore(path, state, expect_config=expected)
    message = str(info.value)
    assert 'estimator (checkpoint has "pes"; not expected)' in message
    assert "new (not in the checkpoint; expected 1)" in message
    assert "outer.lr (checkpoint has 0.0003, expected 0.001)" in message
    assert "seed" not in message and "clip" not in message and str(path) in message


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, key):
    state = _state(key)
    good = checkpoint.save(tmp_path, 1, state, CONFIG)
    bad = checkpoint.save(tmp_path, 2, _state(key, fill=1), CONFIG)
    bad.write_bytes(bad.read_bytes()[:-10])
    skipped = []
    restored, _, step = checkpoint.restore_latest(tmp_path, state, skipped=skipped)
    _assert_bitwise_equal(restored, state)
    assert step == 1
    assert len(skipped) == 1 and skipped[0].path == str(bad) and "truncated" in skipped[0].cause
    assert checkpoint.list_checkpoints(tmp_path) == [good, bad]  # restore deletes nothing
    # every checkpoint corrupt: an error naming each, still nothing deleted
    good.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="every checkpoint .* is corrupt") as info:
        checkpoint.restore_latest(tmp_path, state)
    assert str(good) in str(info.value) and str(bad) in str(info.value)
    assert checkpoint.list_checkpoints(tmp_path) == [good, bad]


def test_config_mismatch_is_not_passed_over(tmp_path, key):
    state = _state(key)
    checkpoint.save(tmp_path, 1, state, CONFIG)
    checkpoint.save(tmp_path, 2, state, CONFIG)
    with pytest.raises(checkpoint.CheckpointMismatch, match="config mismatch"):
        checkpoint.restore_latest(tmp_path, state, expect_config={**CONFIG, "seed": 12345})


def test_failed_save_leaves_previous_checkpoint_and_no_temp(tmp_path, key, monkeypatch):
    state = _state(key)
    good = checkpoint.save(tmp_path, 1, state, CONFIG)

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(tmp_path, 2, state, CONFIG, keep=1)
    assert os.listdir(tmp_path) == [good.name]
    _assert_bitwise_equal(checkpoint.restore(good, state)[0], state)
    with pytest.raises(ValueError, match="not JSON-serializable"):
        checkpoint.save(tmp_path, 3, state, {"f": object()})
    with pytest.raises(ValueError, match=r"leaf \['s'\] has dtype <U3"):
        checkpoint.save(tmp_path, 3, {"s": "abc"})
    assert os.listdir(tmp_path) == [good.name]


def test_stale_temp_files_are_ignored_then_cleaned(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".ckpt_00000009.safetensors.tmp.{dead.pid}.0123abcd"
    stale.write_bytes(b"partial")
    mine = tmp_path / f".ckpt_00000008.safetensors.tmp.{os.getpid()}.0123abcd"  # maybe still being written
    mine.write_bytes(b"partial")
    assert checkpoint.list_checkpoints(tmp_path) == [] and checkpoint.latest(tmp_path) is None
    assert checkpoint.restore_latest(tmp_path, {"x": jnp.zeros(1)}) is None
    checkpoint.save(tmp_path, 1, {"x": jnp.zeros(1)})
    assert sorted(os.listdir(tmp_path)) == sorted(["ckpt_00000001.safetensors", mine.name])


def test_manager_saves_every_n_steps_or_m_minutes(tmp_path):
    manager = CheckpointManager(tmp_path, every_steps=10, every_minutes=1.0, keep=2, last_time=0.0)
    assert [s for s in range(1, 31) if manager.should_save(s, now=1.0)] == [10, 20, 30]
    assert manager.should_save(7, now=60.0) and not manager.should_save(7, now=59.9)
    state = {"x": jnp.zeros(2), "n": jnp.asarray(0, jnp.int32)}
    manager.save(7, state, CONFIG, now=60.0)
    assert not manager.should_save(7, now=1000.0)  # the step just saved
    assert not manager.should_save(8, now=119.9) and manager.should_save(8, now=120.0)
    for step in (10, 20):
        manager.save(step, state, CONFIG)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "ckpt_00000010.safetensors",
        "ckpt_00000020.safetensors",
    ]
    fresh = CheckpointManager(tmp_path, every_steps=10)
    _, config, step = fresh.restore_latest(state, expect_config=CONFIG)
    assert (config, step, fresh.last_step) == (CONFIG, 20, 20) and not fresh.should_save(20)
    assert not CheckpointManager(tmp_path).should_save(100)


_CHILD = """
import sys
import jax, jax.numpy as jnp
from lopt import checkpoint

def state(step):
    return {"theta": jnp.full((2_000_000,), step, jnp.float32), "h": jnp.full((999,), step, jnp.bfloat16),
            "key": jax.random.key(step), "step": jnp.asarray(step, jnp.int32)}

directory = sys.argv[1]
restored = checkpoint.restore_latest(directory, state(0), expect_config={"run": "kill"})
step = 0 if restored is None else restored[2]
while True:
    step += 1
    checkpoint.save(directory, step, state(step), {"run": "kill"}, keep=2)
"""


def test_sigkill_during_saves_never_leaves_a_corrupt_checkpoint(tmp_path):
    """Children save a ~8 MB state in a loop (resuming from the latest checkpoint) and are SIGKILLed
    while a temp file is being written or just after; every listed checkpoint must restore."""
    rng = random.Random(0)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    template = {
        "theta": jnp.zeros(2_000_000),
        "h": jnp.zeros(999, jnp.bfloat16),
        "key": jax.random.key(0),
        "step": jnp.asarray(0, jnp.int32),
    }
    last_step = killed_mid_save = 0
    for round_ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(tmp_path)], env=env, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while True:  # until the child has saved a new checkpoint and is writing the next one
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never started saving"
            newest = checkpoint.latest(tmp_path)
            progressed = newest is not None and int(newest.stem.split("_")[1]) > last_step
            if progressed and any(f".tmp.{child.pid}." in name for name in os.listdir(tmp_path)):
                break
        time.sleep(rng.choice([0.0, rng.uniform(0, 0.05)]) if round_ else 0.0)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_mid_save += any(f".tmp.{child.pid}." in name for name in os.listdir(tmp_path))
        paths = checkpoint.list_checkpoints(tmp_path)
        assert 1 <= len(paths) <= 3  # keep=2, plus one if killed between rename and pruning
        for path in paths:
            restored, config, step = checkpoint.restore(path, template, expect_config={"run": "kill"})
            assert path.name == f"ckpt_{step:08d}.safetensors" and config == {"run": "kill"}
            assert np.all(np.asarray(restored["theta"]) == step) and int(restored["step"]) == step
            assert np.all(np.asarray(restored["h"].astype(jnp.float32)) == float(jnp.bfloat16(step)))
            np.testing.assert_array_equal(
                jax.random.key_data(restored["key"]), jax.random.key_data(jax.random.key(step))
            )
        assert checkpoint.restore_latest(tmp_path, template)[2] > last_step  # each child made progress
        last_step = checkpoint.restore_latest(tmp_path, template)[2]
    assert killed_mid_save >= 1  # round 0 kills as soon as the temp file appears
    checkpoint.save(tmp_path, last_step + 1, template, {"run": "kill"}, keep=2)
    assert not [n for n in os.listdir(tmp_path) if ".tmp." in n]  # stale temps of killed children are gone
