"""`ValidationActor`: the validation protocol of meta-training (`lopt.validation.Validator`) in an
actor of its own, so scoring a theta never stalls the learner: the learner submits (step, theta)
and writes the result (``valid/*`` rows, ``best.safetensors``) when it arrives."""

from __future__ import annotations

import os

from lopt.distributed.wire import from_host


class ValidationActor:
    """Scores thetas on the run's validation suite; wrapped with ``ray.remote`` by the learner."""

    def __init__(self, config: dict, core: int | None = None):
        if core is not None:
            os.sched_setaffinity(0, {core})
        import jax

        from lopt.config import MetaTrainConfig
        from lopt.validation import Validator, get_validation_suite

        if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/lopt/jax"))
        cfg = MetaTrainConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k != "references"}
        )
        self.long = cfg.validate_long
        self.validator = Validator(get_validation_suite(cfg.validation), cfg.build_learned())

    def validate(self, step: int, theta) -> tuple[int, dict]:
        """(step, the validation metrics of theta) -- `Validator.__call__`'s dict."""
        return step, self.validator(from_host(theta), long=self.long)
