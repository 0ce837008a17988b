"""Population sharding: the particle axis of an outer step split across devices with `jax.sharding`.

    mesh = particle_mesh()                        # every device, one mesh axis "particles"
    state = shard_population(trainer, state, mesh)   # estimator states split along the particles
    step = sharded_step(trainer, state, mesh)     # the outer step, with the state kept sharded
    state, metrics = step(state, trainer.data(), trainer.hparams)

The same code runs on one CPU (a mesh of one device: the plain step) and on several devices.
Only the estimator states hold a particle axis: each leaf whose leading axis is a group's P or 2P
particles (antithetic unrolls; divisible by the device count) is split along it, every other
array (theta, the outer optimizer's state, the key, the data) is replicated. XLA's SPMD
partitioner then runs each device's particles where they live and inserts the reductions over
particles (the estimate's mean) as collectives. Reductions in another order make the result
equal to the unsharded step to float rounding, not bitwise.

Test it on one machine with fake CPU devices, set before jax starts:
``XLA_FLAGS=--xla_force_host_platform_device_count=2``. Several hosts (a pod of accelerators):
call ``jax.distributed.initialize(coordinator_address="HOST:PORT", num_processes=N,
process_id=i)`` at the start of the same program on every host (on Cloud TPU and SLURM the
arguments are found automatically: ``jax.distributed.initialize()``); ``jax.devices()`` then lists
every host's devices, `particle_mesh` spans them all, and each process feeds and reads only its
addressable shards (``jax.make_array_from_callback`` for inputs built per host).

References: JAX documentation, "Distributed arrays and automatic parallelization" and
"Using JAX in multi-host and multi-process environments".
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lopt.meta_train.outer import OuterState, outer_step
from lopt.meta_train.trainer import MetaTrainer

AXIS = "particles"


def particle_mesh(devices: list | None = None) -> Mesh:
    """A one-axis mesh ``("particles",)`` over ``devices`` (default: every device, all hosts')."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("particle_mesh needs at least one device.")
    return Mesh(np.array(devices), (AXIS,))


def population_shardings(trainer: MetaTrainer, state: OuterState, mesh: Mesh) -> OuterState:
    """The sharding of every leaf of ``state`` (see the module docstring for the rule)."""
    n = mesh.size
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec(AXIS))

    def group(est, est_state):
        sizes = {est.num_particles, 2 * est.num_particles}

        def leaf(x):
            shape = np.shape(x)
            return split if shape and shape[0] in sizes and shape[0] % n == 0 else replicated

        return jax.tree.map(leaf, est_state)

    states = tuple(group(est, s) for est, s in zip(trainer.estimators, state.estimator_states))
    rest = jax.tree.map(lambda _: replicated, state._replace(estimator_states=()))
    return rest._replace(estimator_states=states)


def shard_population(trainer: MetaTrainer, state: OuterState, mesh: Mesh) -> OuterState:
    """``state`` placed on ``mesh``: estimator states split along their particles, the rest replicated."""
    return jax.device_put(state, population_shardings(trainer, state, mesh))


def sharded_step(trainer: MetaTrainer, state: OuterState, mesh: Mesh) -> Any:
    """``step(state, data, hparams) -> (state, metrics)``: `trainer`'s outer step compiled for ``mesh``,
    taking and returning the state with `population_shardings` (``state`` gives the structure)."""
    shardings = population_shardings(trainer, state, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    fn = functools.partial(
        outer_step,
        estimators=trainer.estimators,
        weights=trainer.weights,
        outer_opt=trainer.outer_opt,
        per_step=trainer.per_step,
    )
    return jax.jit(
        fn, in_shardings=(shardings, replicated, replicated), out_shardings=(shardings, replicated)
    )
