"""Export the portable part of a meta-training run: what another machine needs to continue it.

    lopt export-run runs/meta docs/meta-runs/meta     # then, elsewhere:
    cp -r docs/meta-runs/meta runs/meta && lopt meta-train --config runs/meta/config.json --out runs/meta --resume

Copies ``config.json``, ``references.json`` (the groups' L_ref), ``best.safetensors`` and
``best.json``, ``theta.safetensors``, the newest
portable checkpoint (``portable/``: theta, outer-optimizer state, step, key) and ``metrics.jsonl``
thinned to every ``every``-th step plus every validation row -- never the full checkpoints (all
particles' inner state, 10-100 MB). The resumed run restarts its particles (not bitwise).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from lopt.checkpoint import latest
from lopt.validate import ConfigError

FILES = ("config.json", "references.json", "best.safetensors", "best.json", "theta.safetensors")


def export_run(run: str, dest: str, every: int = 10) -> list[Path]:
    """Copy the portable part of ``run`` into ``dest``; returns the files written."""
    src, out = Path(run), Path(dest)
    portable = latest(src / "portable")
    if portable is None:
        raise ConfigError(f"{src / 'portable'} holds no portable checkpoint: is {src} a lopt meta-train run?")
    (out / "portable").mkdir(parents=True, exist_ok=True)
    for old in (out / "portable").glob("ckpt_*.safetensors"):
        old.unlink()
    written = [Path(shutil.copy2(portable, out / "portable" / portable.name))]
    written += [Path(shutil.copy2(src / name, out / name)) for name in FILES if (src / name).exists()]
    kept = []
    for line in (src / "metrics.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "valid/score" in row or row.get("step", 0) % every == 0:
            kept.append(line)
    (out / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    return [*written, out / "metrics.jsonl"]


if __name__ == "__main__":  # the earlier entry point: `lopt export-run`
    from lopt.cli import main

    main(["export-run", *sys.argv[1:]])
