"""Running a search on a task, with an on-disk cache keyed by everything that determines the numbers.

A search runs as one compiled program (`lopt.evaluate.evaluate_hparams`: trials x seeds vmapped,
common random numbers); its curves are written atomically as ``.npz`` under the cache directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.evaluate import EVAL_SPLITS, Curves, evaluate_hparams, timed
from lopt.serialization import atomic_write
from lopt.tasks.base import Task
from lopt.tuning.searches import Search
from lopt.validate import ConfigError

CACHE_VERSION = 2  # bump when the meaning of cached numbers changes (2: valid-loss feed as in meta-training)


def task_fingerprint(task: Task) -> str:
    """sha256 of a task's family (its sampling space), static structure and dynamic values.

    The data arrays are not hashed: they are determined by the family and static structure."""
    h = hashlib.sha256(f"{task.family!r}|{task.static!r}".encode())
    for leaf in jax.tree.leaves(task.dynamic):
        a = np.asarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def default_cache_dir() -> str:
    """``$LOPT_CACHE``, or ``runs/cache`` under the working directory."""
    return os.environ.get("LOPT_CACHE") or os.path.join("runs", "cache")


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """One search on one task: numpy curves with leading axes (C trials, S seeds)."""

    task: str  # task.name
    search: str  # search.name
    curves: Curves
    seconds: dict  # compile_seconds, run_seconds of the run that produced the numbers
    cached: bool  # loaded from the cache


def run_key(task: Task, seed: int) -> jax.Array:
    """The key of every search on ``task`` with ``seed`` (common random numbers across searches)."""
    return jax.random.fold_in(jax.random.key(seed), int(task_fingerprint(task)[:7], 16))


def _cache_path(cache: str, task: Task, search: Search, config: dict) -> str:
    h = hashlib.sha256(
        json.dumps(
            dict(config, task=task_fingerprint(task), search=search.name, version=CACHE_VERSION),
            sort_keys=True,
        ).encode()
    )
    h.update(str(jax.tree.structure(search.trials)).encode())
    for leaf in jax.tree.leaves(search.trials):
        h.update(np.asarray(leaf).tobytes())
    slug = "".join(c if c.isalnum() else "-" for c in f"{task.family.name}-{search.name}")[:60]
    return os.path.join(cache, f"{slug}-{h.hexdigest()[:16]}.npz")


def _cache_entry(
    cache: str | None, task: Task, search: Search, num_steps, num_seeds, eval_every, eval_batches, seed
) -> str | None:
    """The cache file of a `run_search` (None without a cache)."""
    if not cache:
        return None
    config = dict(
        _static(num_steps, num_seeds, eval_every, eval_batches), eval_splits=list(EVAL_SPLITS), seed=seed
    )
    return _cache_path(cache, task, search, config)


def _save_npz(path: str, result: SearchResult) -> None:
    """Write atomically (`lopt.serialization.atomic_write`)."""
    c = result.curves
    arrays = {"train_loss": c.train_loss, "eval_steps": c.eval_steps, "diverged_step": c.diverged_step}
    arrays.update({f"eval/{s}/{m}": v for s, ms in c.eval.items() for m, v in ms.items()})
    meta = json.dumps({"task": result.task, "search": result.search, "seconds": result.seconds})
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.asarray(meta), **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write(path, buffer.getvalue())


def _load_npz(path: str) -> SearchResult:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        evals: dict = {}
        for k in z.files:
            if k.startswith("eval/"):
                _, split, metric = k.split("/")
                evals.setdefault(split, {})[metric] = z[k]
        curves = Curves(z["train_loss"], z["eval_steps"], evals, z["diverged_step"])
    return SearchResult(meta["task"], meta["search"], curves, meta["seconds"], cached=True)


def _static(num_steps, num_seeds, eval_every, eval_batches) -> dict:
    return {
        "num_steps": num_steps,
        "num_seeds": num_seeds,
        "eval_every": eval_every,
        "eval_batches": eval_batches,
    }


def compile_search(
    task: Task,
    search: Search,
    *,
    num_steps: int,
    num_seeds: int = 3,
    eval_every: int = 100,
    eval_batches: int = 4,
    seed: int = 0,
) -> tuple[Any, float]:
    """Compile `run_search`'s program ahead of time, e.g. in a thread while another search runs
    (XLA compiles without holding the GIL). Returns ``(compiled, seconds)`` for ``run_search(compiled=)``."""
    t0 = time.perf_counter()
    trials = jax.tree.map(jnp.asarray, search.trials)
    lowered = evaluate_hparams.lower(
        run_key(task, seed),
        task,
        trials,
        make=search.make,
        **_static(num_steps, num_seeds, eval_every, eval_batches),
    )
    return lowered.compile(), time.perf_counter() - t0


def run_search(
    task: Task,
    search: Search,
    *,
    num_steps: int,
    num_seeds: int = 3,
    eval_every: int = 100,
    eval_batches: int = 4,
    seed: int = 0,
    cache: str | None = None,
    require_cache: bool = False,
    compiled: tuple[Any, float] | None = None,
) -> SearchResult:
    """Run every trial of ``search`` on ``task`` for ``num_seeds`` seeds (one compiled program).

    The run key is derived from ``seed`` and the task, so every search on a task sees the same
    initializations and batches. With ``cache`` (a directory), results are read from and written to
    ``cache`` keyed by (task, search name and trial values, steps, seeds, eval_every, eval_batches,
    seed); ``require_cache=True`` raises instead of running when the entry is missing. ``compiled``
    is the output of `compile_search` with the same arguments (else the program is compiled here).
    """
    path = _cache_entry(cache, task, search, num_steps, num_seeds, eval_every, eval_batches, seed)
    if path and os.path.exists(path):
        return _load_npz(path)
    if require_cache:
        raise ConfigError(
            f"no cached result for {search.name} on {task.name} in {cache}; run `lopt eval` first."
        )
    trials = jax.tree.map(jnp.asarray, search.trials)
    args = (run_key(task, seed), task, trials)
    if compiled is None:
        curves, seconds = timed(
            evaluate_hparams,
            *args,
            make=search.make,
            **_static(num_steps, num_seeds, eval_every, eval_batches),
        )
    else:
        t0 = time.perf_counter()
        curves = jax.block_until_ready(compiled[0](*args))
        seconds = {"compile_seconds": compiled[1], "run_seconds": time.perf_counter() - t0}
    result = SearchResult(task.name, search.name, jax.tree.map(np.asarray, curves), seconds, cached=False)
    if path:
        _save_npz(path, result)
    return result


def is_cached(
    task: Task,
    search: Search,
    *,
    num_steps: int,
    num_seeds: int = 3,
    eval_every: int = 100,
    eval_batches: int = 4,
    seed: int = 0,
    cache: str | None = None,
    **_,
) -> bool:
    """Whether `run_search` with these arguments would read the cache."""
    path = _cache_entry(cache, task, search, num_steps, num_seeds, eval_every, eval_batches, seed)
    return path is not None and os.path.exists(path)
