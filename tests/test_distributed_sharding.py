"""Population sharding (lopt.distributed.sharding) on 1 and 2 host CPU devices, each in a fresh
process (the device count is fixed when jax starts): the sharded outer step keeps the particle axis
split across the devices and gives the plain step's theta (bitwise on one device, to float rounding
on two)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys
import jax, numpy as np
from lopt.config import MetaTrainConfig
from lopt.meta_train.trainer import MetaTrainer
from lopt.distributed.sharding import particle_mesh, shard_population, sharded_step

cfg = MetaTrainConfig(family="quadratic", space='{"dims": [2, 4, 8]}', num_groups=4, num_particles=2,
                      truncation_length=5, horizon=(20, 50), validate_every=0, loss_reference="zero", warmup=5)
trainer = MetaTrainer.from_config(cfg)
init, data = trainer.init(jax.random.key(0)), trainer.data()
plain = init
for _ in range(10):
    plain, _ = trainer.step(plain, data, trainer.hparams)
mesh = particle_mesh()
state = shard_population(trainer, init, mesh)
step = sharded_step(trainer, state, mesh)
for _ in range(10):
    state, metrics = step(state, data, trainer.hparams)
unroll = state.estimator_states[0].unroll
leaf = jax.tree.leaves(unroll)[0]
a, b = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(s.theta)]) for s in (plain, state))
print(json.dumps({
    "devices": len(jax.devices()),
    "leaf_devices": len(leaf.sharding.device_set),
    "shard_rows": [s.data.shape[0] for s in leaf.addressable_shards],
    "rows": leaf.shape[0],
    "max_abs_diff": float(np.max(np.abs(a - b))),
    "scale": float(np.max(np.abs(a))),
    "bitwise": a.tobytes() == b.tobytes(),
    "step": int(state.step),
}))
"""


def _run(devices: int) -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": " ".join(  # the suite's flags (conftest), with this device count
            [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
            + [f"--xla_force_host_platform_device_count={devices}"]
        ),
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("devices", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_sharded_population_step(devices):
    got = _run(devices)
    assert got["devices"] == devices and got["step"] == 10
    # the (2P = 8)-particle unroll state of group 0 lives split across the devices, P / devices rows each
    assert got["rows"] == 8 and got["leaf_devices"] == devices
    assert got["shard_rows"] == [8 // devices] * devices
    if devices == 1:
        assert got["bitwise"]  # one device: the plain step's program
    else:
        assert got["max_abs_diff"] <= 1e-5 * max(got["scale"], 1.0)  # reductions over particles reordered


def test_particle_mesh_needs_a_device():
    from lopt.distributed.sharding import particle_mesh

    with pytest.raises(ValueError, match="at least one device"):
        particle_mesh([])
