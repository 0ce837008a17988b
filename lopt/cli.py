"""The `lopt` command line: ``lopt data fetch|list``, ``lopt tasks list``, ``lopt demo``, ``lopt study NAME``, ...

Each leaf command is a plain function whose signature tyro turns into flags.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import tyro
from rich.console import Console
from rich.table import Table

from lopt.config import MetaTrainConfig
from lopt.hpo.tune import TuneConfig
from lopt.report import EvalConfig
from lopt.studies.demo import DemoConfig

console = Console(width=None if sys.stdout.isatty() else 150)


def data_fetch(names: tuple[str, ...] = (), /, force: bool = False) -> None:
    """Fetch datasets into the cache ($LOPT_DATA, default ~/.cache/lopt) and verify their sha256.

    Args:
        names: dataset names (all when none is given); `lopt data list` shows them.
        force: fetch again even when a verified copy is present.
    """
    from lopt import data

    for row in data.fetch(list(names) or None, force=force):
        console.print(f"{row[0]:<16} {row[1]:<10} {row[2]:6.2f} s")


def data_list() -> None:
    """List every dataset: kind, size, source and whether it is present in the cache."""
    from lopt import data

    table = Table(title=f"datasets in {data.cache_dir()}")
    for col in ("name", "kind", "present", "size", "source"):
        table.add_column(col)
    for st in data.status():
        size = "procedural" if st.expected_size == 0 else f"{st.expected_size / 1e6:.2f} MB"
        table.add_row(st.name, st.kind, "yes" if st.present else "no", size, st.source)
    console.print(table)


def tasks_list(measure: bool = True, steps: int = 200) -> None:
    """List every task family with its parameter-count range and measured Adam steps per second.

    Args:
        measure: time a representative task of each family (jitted `lax.scan` of Adam steps).
        steps: steps per timed run.
    """
    from lopt.tasks import profile
    from lopt.tasks.registry import TASKS

    table = Table(title="task families (steps/s: Adam under lax.scan, representative task, this machine)")
    for col in ("family", "params (min-max)", "representative task", "params", "steps/s", "compile s"):
        table.add_column(col)
    for name, cls in TASKS.items():
        family = cls()
        lo, hi = profile.param_range(family)
        task = profile.representative(family)
        sps, comp = profile.steps_per_second(task, steps) if measure else (float("nan"), float("nan"))
        table.add_row(
            name, f"{lo:,} - {hi:,}", task.name, f"{task.num_params():,}", f"{sps:,.0f}", f"{comp:.1f}"
        )
    console.print(table)


def demo(cfg: Annotated[DemoConfig, tyro.conf.arg(name="")] = DemoConfig()) -> None:
    """The main job: the pretrained optimizer vs tuned Adam on held-out tasks, a short meta-training
    run from scratch, and an HTML report with figures (<out>/report.html); prints the summary."""
    from lopt.studies.demo import run

    run(cfg, console=console)


def eval_(cfg: Annotated[EvalConfig, tyro.conf.arg(name="")] = EvalConfig()) -> None:
    """Run optimizers on a task suite (tuned baselines, Lookahead study) and write a report.

    Outputs go to <out>/<name>/: report.html, report.md, figures/*.png, results.csv (one row per task,
    optimizer, seed, step), final.csv, config.json, timings.json. Tuned runs are cached (--cache).
    Optimizer names: adam-lr-global, adam-lr-per-task, adam8p-per-task, nadamw-list, nadamw-list-first1,
    lookahead-adam-lr-per-task, any baseline name (its defaults), or <baseline>-lr-per-task / -lr-global.
    """
    from lopt.report import run_eval
    from lopt.studies import report_studies

    run_eval(cfg, console=console, studies=report_studies(cfg))


def report(run: str = "runs/eval", /) -> None:
    """Re-render the report of a `lopt eval` run from its config.json and the cache (trains nothing).

    Args:
        run: the run directory (<out>/<name> of `lopt eval`).
    """
    from lopt.report import load_config, run_eval
    from lopt.studies import report_studies

    cfg = load_config(run)
    run_eval(cfg, require_cache=True, console=console, studies=report_studies(cfg))


def meta_train(
    cfg: Annotated[MetaTrainConfig, tyro.conf.arg(name="")] = MetaTrainConfig(), config: str = ""
) -> None:
    """Meta-train a learned optimizer (PES over task groups by default), with checkpoints and resume.

    Outputs go to <out>/: config.json, metrics.jsonl, tb/ (TensorBoard event files),
    checkpoints/, theta.safetensors. --resume continues exactly from the latest checkpoint. Compiled
    programs are cached in $JAX_COMPILATION_CACHE_DIR (default ~/.cache/lopt/jax).

    Args:
        config: a JSON file of config values (a flat object, or a run's config.json); flags given
            explicitly on the command line override it.
    """
    import os

    import jax

    from lopt.checkpoint import CheckpointError
    from lopt.config import explicit_flags, resolve
    from lopt.meta_train import meta_train as run

    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # compiled programs persist: a resume starts fast
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/lopt/jax"))
    try:
        resolved = resolve(cfg, config, explicit_flags(sys.argv[1:]))
        if resolved.ray:  # Ray is imported only here, only for distributed runs
            from lopt.distributed.learner import meta_train_distributed as run
        run(resolved, console=console)
    except CheckpointError as e:  # --resume of a mismatched or damaged checkpoint: the message says which
        sys.exit(f"lopt meta-train: {e}")


def export_theta(run: str, out: str, /) -> None:
    """Write the theta of a meta-training checkpoint (a file, or a run's latest) as a theta file.

    Args:
        run: a checkpoint file, or a `lopt meta-train` output directory (its latest checkpoint).
        out: the theta file to write (safetensors, `lopt.load_theta` format).
    """
    from lopt.checkpoint import CheckpointError
    from lopt.meta_train import load_run
    from lopt.optimizers.learned import save_theta

    try:
        trainer, state, _, step = load_run(run)
    except CheckpointError as e:
        sys.exit(f"lopt export-theta: {e}")
    save_theta(out, trainer.learned, state.theta)
    console.print(f"theta of {trainer.learned.name} at outer step {step} written to {out}")


def export_run(run: str, dest: str, /, every: int = 10) -> None:
    """Copy the portable part of a meta-training run (configs, best and last theta, the newest
    portable checkpoint, thinned metrics): what another machine needs to continue it.

    Args:
        run: a `lopt meta-train` output directory.
        dest: the directory to write (e.g. docs/meta-runs/NAME).
        every: keep every N-th metrics row (and all validations).
    """
    from lopt.meta_train.export import export_run as export

    for path in export(run, dest, every):
        console.print(f"{path} ({path.stat().st_size / 1e3:.0f} kB)")


def curves(
    runs: tuple[str, ...],
    /,
    budgets: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0),
    out: str = "",
    by: str = "score",
    steps: tuple[int, ...] = (),
    window: tuple[int, ...] = (),
    against: str = "",
) -> None:
    """Validation curves of meta-training runs: the best score within CPU budgets (or outer steps),
    as a table (and curves.md, curves.json, validation.png with --out).

    Args:
        runs: run directories (name=DIR to label them).
        budgets: CPU-hours.
        out: write curves.md, curves.json and validation.png here.
        by: rank by the validation score (the mean over tasks) or the median.
        steps: budgets in outer steps instead of CPU-hours (fair between runs whose start-up differs).
        window: FIRST LAST outer steps: add the mean over the validations in that range (steadier
            than a best).
        against: a run's label: with --window, on how many validation tasks each run's mean over the
            window is below that run's (a paired A/B).
    """
    from lopt.meta_train.curves import validation_curves
    from lopt.validate import ConfigError

    if not runs:
        raise ConfigError("name at least one run directory (name=DIR to label it).")
    validation_curves(runs, budgets, out, by, steps, window, against)


def validate(
    candidates: tuple[str, ...], /, validation: str = "valid", long: bool = False, out: str = "runs/select"
) -> None:
    """Validate and rank thetas on a validation suite (never the held-out suite): choose what to ship.

    Args:
        candidates: run directories (latest checkpoint), RUN:STEP,STEP, theta files (a run's
            best.safetensors) or pretrained names.
        validation: the validation suite (lopt.validation).
        long: also its long subset at 10 x T.
        out: selection.md and selection.json are written here.
    """
    import os

    import jax

    from lopt.studies import selection

    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/lopt/jax"))
    selection.run(selection.Config(candidates, validation, long, out))


def tune(task: str, /, cfg: Annotated[TuneConfig, tyro.conf.arg(name="")] = TuneConfig()) -> None:
    """Tune a baseline's hyperparameters on one task (PES, unrolled or implicit hypergradients, or
    grid / random search), beside a grid and a random search of equal compute.

    Outputs go to <out>/: results.json (config, hparam trajectory, final test loss, compute spent in
    inner steps and seconds, the comparison searches) and tune.png. A diverging trial is recorded.

    Args:
        task: a task family (`lopt tasks list`); its task sampled from --task-seed is tuned.
    """
    from lopt.hpo.tune import run_tune

    run_tune(task, cfg, console=console)


COMMANDS: dict[str, dict[str, Callable]] = {
    "data": {"fetch": data_fetch, "list": data_list},
    "tasks": {"list": tasks_list},
    "demo": {"": demo},
    "eval": {"": eval_},
    "report": {"": report},
    "meta-train": {"": meta_train},
    "export-theta": {"": export_theta},
    "export-run": {"": export_run},
    "curves": {"": curves},
    "validate": {"": validate},
    "tune": {"": tune},
}


def _user_errors() -> tuple[type[BaseException], ...]:
    from lopt.data import ChecksumError, DatasetMissingError
    from lopt.data.errors import SourceError
    from lopt.validate import ConfigError, UnknownNameError

    return (ChecksumError, DatasetMissingError, SourceError, ConfigError, UnknownNameError)


_USER_ERRORS = _user_errors()


def _usage() -> str:
    from lopt.studies import STUDIES

    lines = ["usage: lopt COMMAND [SUBCOMMAND] [--flags]   (add --help to any command)", ""]
    for group, cmds in COMMANDS.items():
        for sub, fn in cmds.items():
            summary = (fn.__doc__ or "").strip().splitlines()[0]
            lines.append(f"  lopt {group} {sub}".rstrip().ljust(24) + summary)
    for name, summary in STUDIES.items():
        if name != "demo":  # `lopt demo`, above
            lines.append(f"  lopt study {name}".ljust(28) + summary)
    return "\n".join(lines)


def _study(rest: list[str]) -> None:
    """``lopt study NAME [--flags]``: the study's Config from the flags, then its run."""
    from lopt.studies import STUDIES
    from lopt.studies import main as run_study

    if not rest or rest[0] not in STUDIES:
        got = repr(rest[0]) if rest else "nothing"
        sys.exit(f"lopt study: expected one of {sorted(STUDIES)}, got {got}.\n\n{_usage()}")
    try:
        run_study(rest[0], rest[1:])
    except _USER_ERRORS as e:
        sys.exit(f"lopt study {rest[0]}: {e}".replace("  ", " "))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    group, rest = argv[0], argv[1:]
    if group == "study":
        return _study(rest)
    if group not in COMMANDS:
        sys.exit(f"lopt: unknown command {group!r}.\n\n{_usage()}")
    cmds = COMMANDS[group]
    if "" in cmds:
        sub = ""
    elif rest and rest[0] in cmds:
        sub, rest = rest[0], rest[1:]
    else:
        got = repr(rest[0]) if rest else "nothing"
        sys.exit(f"lopt {group}: expected one of {sorted(cmds)}, got {got}.\n\n{_usage()}")
    try:
        tyro.cli(cmds[sub], args=rest, prog=f"lopt {group} {sub}".strip())
    except _USER_ERRORS as e:  # bad input: print the message (it names the problem and the fix)
        sys.exit(f"lopt {group} {sub}: {e}".replace("  ", " "))


if __name__ == "__main__":
    main()
