r"""The scaling model of distributed meta-training (docs/scaling.md), from measured inputs.

With N workers owning g task groups each, a synchronous outer step (staleness 0) takes

.. math::
    T(N) = g\,t_e + \ell + t_u + N c

t_e the wall time of one group's estimate on one core, ℓ the round-trip latency of one message
(paid once: the workers' messages travel in parallel), t_u the learner's update, and c the
learner's serial cost per message (submitting a call, receiving and checking an estimate), which
grows with the estimate's size (on several machines add bytes / bandwidth). Throughput in group
estimates per second is X(N) = gN / T(N): linear while N c is small against g t_e, bounded by
g / c as N grows. The learner is the bottleneck from N* = (g t_e + ℓ + t_u) / c on, where it
spends as long on messages as a worker on its estimates. With staleness ≥ 1 the workers no longer
wait for the learner and an update is limited by the slower of the two sides:
T_async(N) = max(g t_e + ℓ, t_u + N c).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ScalingInputs:
    """Measured by ``benchmarks/distributed.py`` (its "scaling-model inputs" line)."""

    estimate_s: float  # t_e: one group's estimate on one core (s)
    update_s: float  # t_u: the learner's update (s)
    per_message_s: float  # c: the learner's serial cost per message (s)
    latency_s: float  # ℓ: one message's round trip (s)


def step_seconds(x: ScalingInputs, workers: int, groups_per_worker: int = 1, staleness: int = 0) -> float:
    """T(N) (synchronous) or T_async(N) (staleness >= 1) of the module docstring."""
    work = groups_per_worker * x.estimate_s + x.latency_s
    learner = x.update_s + workers * x.per_message_s
    return max(work, learner) if staleness else work + learner


def throughput(x: ScalingInputs, workers: int, groups_per_worker: int = 1, staleness: int = 0) -> float:
    """X(N): group estimates per second."""
    return workers * groups_per_worker / step_seconds(x, workers, groups_per_worker, staleness)


def learner_bound(x: ScalingInputs, groups_per_worker: int = 1) -> float:
    """N*: the number of workers from which the learner's messages take as long as a worker's estimates."""
    return (groups_per_worker * x.estimate_s + x.latency_s + x.update_s) / x.per_message_s
