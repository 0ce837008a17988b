"""Studies: experiments on top of the library, each a module with a frozen ``Config`` and
``run(cfg) -> results`` that writes its figures and tables. Run one with ``lopt study NAME
[--flags]`` (``lopt demo`` for the demo). Nothing in the library imports them; a study adds a
section to `lopt eval` reports through `lopt.report.StudySection` (`report_studies`).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from lopt.validate import unknown_name

# name -> one line; the module is lopt.studies.<name>
STUDIES: dict[str, str] = {
    "demo": "the pretrained optimizer vs tuned Adam on held-out tasks, and meta-training from scratch",
    "selection": "rank thetas on a validation suite (never the held-out suite): choose what to ship",
    "self_training": "a learned optimizer as the outer optimizer of meta-training, against AdamW",
    "implicit_reg": "where optimizers end in the valley of (x - y)^2 / 2 from the same starts",
    "generalization": "a shipped optimizer on other batch sizes, widths and horizons than meta-training's",
    "lookahead": "Lookahead(Adam) and Lookahead(SGD) against their inner optimizers over lr sweeps",
    "short_horizon": "the short-horizon bias of online learning-rate tuning (NQM, MLP)",
}


def get_study(name: str) -> ModuleType:
    """The module of the study ``name`` (its ``Config`` and ``run``)."""
    if name not in STUDIES:
        raise unknown_name("study", name, STUDIES)
    return importlib.import_module(f"lopt.studies.{name}")


def main(name: str, argv: list[str] | None = None, prog: str | None = None) -> Any:
    """Parse ``argv`` into the study's ``Config`` (tyro: one flag per field) and run it."""
    import sys

    import tyro

    study = get_study(name)
    cfg = tyro.cli(
        study.Config, args=sys.argv[1:] if argv is None else argv, prog=prog or f"lopt study {name}"
    )
    return study.run(cfg)


def report_studies(cfg: Any) -> list:
    """The study sections a `lopt.report.EvalConfig` asks for (``lookahead_study``), for
    `lopt.report.run_eval(cfg, studies=...)`."""
    from lopt.studies import lookahead

    return [lookahead.SECTION] if cfg.lookahead_study else []
