"""`lopt eval`: run optimizers on a task suite, select their settings, compare them, write a report.

    summary = run_eval(EvalConfig(suite="test", steps=1000))   # -> runs/eval/{report.md, report.html, ...}
    summary = run_eval(cfg, extra=[Method("mine", fixed_search("mine", my_optax), "fixed")])

Pipeline: the suite's tasks → every distinct search of the requested methods on every task (one
compiled program each, cached on disk by `lopt.tuning.run_search`) → selection (`compare`: per
task, global or fixed, on the outer-valid split) → normalized test losses and the improvement of
every method over every other → files under ``<out>/<name>/``:

- ``config.json``: the resolved `EvalConfig`, the methods and their trials, versions;
- ``results.csv``: the tidy table of the selected runs, one row per (task, optimizer, seed, step);
- ``final.csv``: one row per (task, optimizer, seed) with the final metrics and the chosen hparams;
- ``summary.json``, ``timings.json``: the outcomes, and compile / run seconds of every search;
- ``report.md``, ``report.html``, ``figures/*.png``.

A learned optimizer joins as one more `Method` with ``select="fixed"`` (``fixed_search`` with
``make=lopt.transform, hparams=theta``): it is run and reported like the others, without tuning.

The stages, one module each: `run` (the driver, `EvalConfig`), `compare` (selection, outcomes,
improvements), `sections` (one function per section, and `StudySection`, by which a study adds
its own), `render` (Markdown / HTML), `figures`, `write` (every output file).
"""

from lopt.report.compare import BASELINE_METHODS as BASELINE_METHODS
from lopt.report.compare import Outcome as Outcome
from lopt.report.compare import compare as compare
from lopt.report.compare import improvements as improvements
from lopt.report.render import fmt as fmt
from lopt.report.render import table as table
from lopt.report.render import to_html as to_html
from lopt.report.render import to_markdown as to_markdown
from lopt.report.run import EvalConfig as EvalConfig
from lopt.report.run import load_config as load_config
from lopt.report.run import run_eval as run_eval
from lopt.report.run import step_flops as step_flops
from lopt.report.run import suite_tasks as suite_tasks
from lopt.report.sections import NORMALIZATION_TEXT as NORMALIZATION_TEXT
from lopt.report.sections import StudySection as StudySection
from lopt.report.sections import report_blocks as report_blocks
from lopt.report.write import write_csv as write_csv
from lopt.report.write import write_report as write_report
