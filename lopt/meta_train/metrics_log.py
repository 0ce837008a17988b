"""Meta-training's metric rows (``metrics.jsonl`` and TensorBoard) and its progress bar."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

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
