"""Meta-training's metric rows (``metrics.jsonl`` and TensorBoard) and its progress bar.

`MetricsLog` writes rows; `StepLog` is the loop's side of it (rows gathered on the device, written
every ``log_every`` steps with the step rates and the run's CPU time); `StepBar` is the bar.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def _jsonable(value: Any) -> Any:
    """Host arrays and floats as JSON values; NaN and inf become None."""
    array = np.asarray(value)
    if array.ndim:
        return [_jsonable(v) for v in array]
    item = array.item()
    return None if isinstance(item, float) and not math.isfinite(item) else item


class MetricsLog:
    """Metric rows to ``metrics.jsonl`` (one JSON object per line, with its ``step``) and to
    TensorBoard event files under ``tb/`` (scalars only: per-group vectors stay in the JSON)."""

    def __init__(self, out: Path, start_step: int):
        self.path = out / "metrics.jsonl"
        kept = []
        if start_step > 0 and self.path.exists():  # resumed: drop rows after the checkpoint
            kept = [line for line in self.path.read_text().splitlines() if _row_step(line) <= start_step]
        self._kept = kept
        self.file = open(self.path, "w")  # noqa: SIM115  (open for the whole run; `close` closes it)
        self.file.writelines(line + "\n" for line in kept)
        self.file.flush()
        from tensorboardX import SummaryWriter  # here: tensorboardX imports torch when present, lopt must not

        self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step + 1 if start_step else None)

    def last(self, name: str) -> Any:
        """The last value of ``name`` among the rows kept from before a resume (None if none)."""
        for line in reversed(self._kept):
            value = json.loads(line).get(name)
            if value is not None:
                return value
        return None

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(row) + "\n")
        for name, value in row.items():
            if name != "step" and isinstance(value, int | float):
                self.tb.add_scalar(name, value, step)

    def flush(self) -> None:
        self.file.flush()
        self.tb.flush()

    def close(self) -> None:
        self.file.close()
        self.tb.close()


def _row_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a line cut by a kill: drop it


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("meta-train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[outer]:.2f} outer/s  {task.fields[inner]:,.0f} inner steps/s"),
        TextColumn("meta-loss {task.fields[loss]:.4f}  validation {task.fields[valid]:.4f}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


class StepLog:
    """The outer steps' metric rows: kept on the device as the steps run, written (`MetricsLog`)
    when `write_pending` is called, each with the outer and inner steps per second since the last
    write and the run's CPU seconds (those of the processes before a resume included).

    The first write reports the time since ``t_first`` (build and compilation) as ``first_label``
    and starts the clock; `restart_clock` leaves out time that is not meta-training (a validation).
    """

    def __init__(
        self,
        out: Path,
        start: int,
        inner_per_step: int,
        *,
        t_first: float,
        cpu_first: float,
        first_label: str,
    ):
        self.log = MetricsLog(out, start)
        self.inner_per_step = inner_per_step
        self.t_first, self.cpu_first, self.first_label = t_first, cpu_first, first_label
        self.cpu_before = self.log.last("cpu_seconds") or 0.0  # CPU time of the run before this process
        self.pending: list[tuple[int, dict]] = []
        self.t_mark: float | None = None
        self.step_mark = start

    def cpu_seconds(self) -> float:
        return self.cpu_before + time.process_time() - self.cpu_first

    def add(self, step: int, metrics: dict) -> None:
        self.pending.append((step, metrics))

    def due(self, step: int, log_every: int, force: bool) -> bool:
        """Write now? Every ``log_every`` steps, at the first step, and when ``force``."""
        return not step % log_every or self.t_mark is None or force

    def write_pending(self, step: int, console: Console) -> tuple[float, float]:
        """Write the rows kept since the last write; returns (outer steps/s, the last meta-loss)."""
        rows = jax.device_get(self.pending)
        self.pending = []
        now = time.perf_counter()
        if self.t_mark is None:  # the first step includes compilation: report it, time from here
            console.print(f"first outer step ({self.first_label}): {now - self.t_first:.1f} s")
            self.t_mark, self.step_mark = now, step
        rate = (step - self.step_mark) / (now - self.t_mark) if step > self.step_mark else 0.0
        cpu = self.cpu_seconds()
        for s, m in rows:
            self.log.write(
                s,
                {
                    **m,
                    "outer_steps_per_s": rate,
                    "inner_steps_per_s": rate * self.inner_per_step,
                    "cpu_seconds": cpu,
                },
            )
        self.t_mark, self.step_mark = now, step
        return rate, float(rows[-1][1]["meta_loss"])

    def write_validation(self, step: int, metrics: dict) -> None:
        """A validation's row; ``metrics`` gains the CPU seconds so far."""
        metrics["cpu_seconds"] = self.cpu_seconds()
        self.log.write(step, metrics)

    def restart_clock(self) -> None:
        self.t_mark = time.perf_counter()

    def flush(self) -> None:
        self.log.flush()

    def close(self) -> None:
        self.log.close()


class StepBar:
    """The loop's progress bar: steps done, outer and inner steps/s, meta-loss, last validation."""

    def __init__(
        self, console: Console, enabled: bool, total: int, start: int, inner_per_step: int, valid: float
    ):
        self.progress = _progress(console, enabled)
        self.inner_per_step = inner_per_step
        self.args = dict(total=total, completed=start, outer=0.0, inner=0.0, loss=math.nan, valid=valid)

    def __enter__(self) -> StepBar:
        self.progress.__enter__()
        self.task = self.progress.add_task("meta-train", **self.args)
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def show(self, step: int, rate: float, loss: float, valid: float) -> None:
        self.progress.update(
            self.task, completed=step, outer=rate, inner=rate * self.inner_per_step, loss=loss, valid=valid
        )
