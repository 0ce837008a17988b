"""Ray, imported only here and only when distributed meta-training is asked for: joining a cluster or
starting a local one.

    ray = require_ray()           # the module, or a ConfigError that says how to install it
    started = connect("auto", num_cpus=3)   # join a running cluster, else start a local one

``"auto"`` joins the cluster that ``ray start --head`` started on this machine (its address is in
Ray's session files) and starts a local cluster when there is none; any other value is a cluster
address (``HOST:PORT``, or ``ray://HOST:PORT`` for Ray Client) and must be reachable. A local
cluster started here runs its workers at niceness 0, as the learner (Ray's default, 15, let any
other job on the machine take their cores; measured in benchmarks/distributed.py).
"""

from __future__ import annotations

import os

from lopt.validate import ConfigError

INSTALL = "pip install 'lopt[ray]'   (or: pip install -c constraints.txt ray==2.60.0)"


def require_ray():
    """The ``ray`` module; a ConfigError naming the install command when it is missing."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def connect(address: str, num_cpus: int) -> bool:
    """Connect this process to a Ray cluster; True when it started (and owns) a local one.

    Already connected (``ray.init`` called by the caller): nothing is done. ``num_cpus``: the
    logical CPUs of a local cluster (at least the actors it must hold: workers, validation)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address == "auto":
        try:
            ray.init(address="auto", **common)
            return False
        except ConnectionError:  # no running cluster: start one on this machine
            # Ray runs workers at niceness 15 by default; here they are the run's foreground work
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(num_cpus=max(num_cpus, os.cpu_count() or 1), _node_ip_address="127.0.0.1", **common)
            return True
    try:
        ray.init(address=address, **common)
    except (ConnectionError, ValueError) as err:
        raise ConfigError(
            f"--ray {address}: cannot join that Ray cluster ({err}); start one with "
            "`ray start --head`, or pass --ray auto to start a local one."
        ) from None
    return False


def check_capacity(needed: int) -> None:
    """A clear error when the cluster has fewer logical CPUs than the actors need (Ray would wait forever)."""
    ray = require_ray()
    have = ray.cluster_resources().get("CPU", 0)
    if have < needed:
        raise ConfigError(
            f"the Ray cluster has {have:g} CPUs but the run needs {needed} (one per worker and one "
            "for validation): add nodes, start it with more --num-cpus, or pass fewer --workers."
        )
