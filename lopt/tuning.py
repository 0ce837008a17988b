"""Tuned hand-designed baselines: searches, per-task normalization, global / per-task selection, cache.

    search = lr_search("adam")                                      # AdamLR: 15 log-spaced rates
    res = run_search(task, search, num_steps=1000, num_seeds=3, eval_every=100, cache="runs/cache")
    i = select_per_task(score(res, "outer_valid"), failed(res))     # best trial on this task

Vocabulary. A **search** is one optimizer constructor ``make(hparams)`` with C **trials**: a
pytree of hparams whose leaves share a leading axis C. A search runs on a task as one compiled
program (`lopt.evaluate.evaluate_hparams`: trials × seeds vmapped, common random numbers), and its
result is cached on disk. A **method** turns a search into one optimizer per task:

- ``per_task``: the trial with the lowest final outer-valid loss on that task (best of C trials);
- ``global``: the one trial with the lowest mean normalized outer-valid loss over all the tasks of
  the suite (the setting you would ship without tuning);
- ``fixed``: a single trial, no selection (a default setting, or a learned optimizer).

``trials=N`` makes a method use only the first N trials of its search, so "the first N entries of
the ordered NAdamW list" is a prefix of one cached run. The list (``lopt/nadamw_list.json``) is
built on the *train* suite only by ``python -m lopt.tuning`` (`build_nadamw_list`); the file
records the command, the budget and the tasks it was built on.

Scores. The score of a trial on a task and split is its final loss (at step N), median over
seeds (robust to one unlucky seed; with 3 seeds, the middle one). A trial has **failed** when any seed diverged (non-finite training loss at some step) or its
final outer-valid or test loss is not finite; a failed trial is never selected (`select_per_task`,
`select_global`). Selection reads ``outer_valid``; reports read ``test``.

Normalization (per task and split): with L the score, L_best the best score of any non-failed
trial of any search on that task (`best_scores`), and L_init the loss at initialization (step 0,
median over seeds; identical for every trial, as all runs share their seeds),

    n = clip((L − L_best) / (L_init − L_best), 0, CLIP),   a failed trial: n = CLIP.

n = 0 is the best run seen on the task, n = 1 is no progress from the initialization, CLIP means
"as bad as diverged". The denominator is a loss *difference*, so negative losses (flows, a saddle)
are fine; when no run improved on the initialization it is floored at a tiny positive value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.evaluate import EVAL_SPLITS, Curves, evaluate_hparams, timed
from lopt.optimizers import BASELINES, get_baseline, load_theta, lookahead
from lopt.pretrained import PRETRAINED, load_pretrained
from lopt.tasks.base import Task
from lopt.validate import ConfigError, check_choice, check_range, unknown_name

CLIP = 2.0  # cap of the normalized loss; a failed (diverged) run counts as CLIP
ADAM_LR_GRID = np.logspace(-5, 0, 15).astype(np.float32)  # AdamLR: 15 log-spaced rates in [1e-5, 1]
CACHE_VERSION = 2  # bump when the meaning of cached numbers changes (2: valid-loss feed as in meta-training)
SELECTIONS = ("per_task", "global", "fixed")

# TaskSet's Adam8p space (Metz et al. 2020, arXiv:2002.11887), log-uniform in each; the learning
# rate is narrowed from [1e-8, 10] to a sane [1e-5, 1]. Decays are per step at TaskSet's 10k steps
# and are rescaled to the run's horizon (`adam8p_search`).
ADAM8P_SPACE = {
    "learning_rate": (1e-5, 1.0),
    "one_minus_b1": (1e-4, 1.0),
    "one_minus_b2": (1e-6, 1.0),
    "eps": (1e-10, 1e3),
    "l1": (1e-8, 10.0),
    "l2": (1e-8, 10.0),
    "linear_decay": (1e-7, 1e-4),
    "exponential_decay": (1e-6, 1e-3),
}
TASKSET_STEPS = 10_000


# --- searches --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Search:
    """C trials of one optimizer constructor, run together on a task.

    Attributes:
      name: identifies the constructor and space in tables and cache keys, e.g. ``adam/lr15``.
      make: hparams -> optax transformation; hashable (a static jit argument), e.g. a
        `BaselineMaker`, ``get_baseline("adam").make`` or a learned optimizer's ``transform``.
      trials: a pytree of arrays with a leading axis C (for baselines, a dict name -> (C,)).
    """

    name: str
    make: Callable[[Any], optax.GradientTransformation]
    trials: Any

    @property
    def num_trials(self) -> int:
        return int(jax.tree.leaves(self.trials)[0].shape[0])

    def describe(self, i: int) -> dict[str, float]:
        """Trial ``i`` as a flat dict of numbers (``{"trial": i}`` when hparams are not scalars)."""
        if isinstance(self.trials, dict) and all(np.ndim(v) == 1 for v in self.trials.values()):
            return {k: float(np.asarray(v)[i]) for k, v in self.trials.items()}
        return {"trial": i}


@dataclasses.dataclass(frozen=True)
class BaselineMaker:
    """``make(hparams)`` of a registered baseline, optionally inside `lookahead` (k, alpha).

    Hashable by value, so equal makers share compiled programs across tasks and runs."""

    baseline: str
    lookahead_k: int = 0  # 0: no Lookahead; else sync every k steps
    lookahead_alpha: float = 0.5  # Lookahead's slow-weight step size

    def __call__(self, hparams):
        opt = get_baseline(self.baseline).make(hparams)
        return lookahead(opt, self.lookahead_k, self.lookahead_alpha) if self.lookahead_k else opt

    @property
    def label(self) -> str:
        if not self.lookahead_k:
            return self.baseline
        return f"lookahead({self.baseline},k={self.lookahead_k},alpha={self.lookahead_alpha:g})"


@dataclasses.dataclass(frozen=True)
class _Constant:
    """``make`` that ignores its hparams and returns one fixed optimizer (hashable by identity)."""

    optimizer: Any

    def __call__(self, hparams):
        return self.optimizer


def lr_search(
    baseline: str = "adam",
    grid: Sequence[float] = ADAM_LR_GRID,
    lookahead_k: int = 0,
    lookahead_alpha: float = 0.5,
) -> Search:
    """A learning-rate grid for a registered baseline (other hparams at their defaults)."""
    get_baseline(baseline)  # unknown names raise, listing the valid ones
    grid = np.asarray(grid, np.float32)
    for lr in grid:
        get_baseline(baseline).resolve({"learning_rate": float(lr)})  # out-of-range rates raise
    make = BaselineMaker(baseline, lookahead_k, lookahead_alpha)
    return Search(f"{make.label}/lr{len(grid)}[{grid[0]:.3g},{grid[-1]:.3g}]", make, {"learning_rate": grid})


def fixed_search(
    name: str,
    optimizer: optax.GradientTransformation | None = None,
    *,
    make: Callable | None = None,
    hparams: Any = None,
) -> Search:
    """One trial: a plain optax ``optimizer``, or ``make(hparams)`` (e.g. a learned optimizer's
    ``transform`` with ``theta``), to compare without tuning."""
    if optimizer is not None:
        return Search(name, _Constant(optimizer), {"_": np.zeros((1,), np.float32)})
    if make is None:
        raise ConfigError(f"fixed_search({name!r}) needs an optimizer, or make= and hparams=.")
    return Search(name, make, jax.tree.map(lambda x: np.asarray(x)[None], hparams))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def adam8p_search(num_trials: int = 10, num_steps: int = TASKSET_STEPS, seed: int = 0) -> Search:
    """Random search over TaskSet's 8 Adam hparams (`ADAM8P_SPACE`), ``num_trials`` samples.

    TaskSet's decays act on a step count rescaled to 10k steps (t' = t · 10000 / T), so they are
    multiplied by 10000 / ``num_steps`` here: the decay reached at the end of training is the same.
    """
    check_range("adam8p_search num_trials", num_trials, 1, 100_000)
    rng = np.random.default_rng(seed)
    u = {k: _log_uniform(rng, lo, hi, num_trials) for k, (lo, hi) in ADAM8P_SPACE.items()}
    scale = TASKSET_STEPS / num_steps
    trials = {
        "learning_rate": u["learning_rate"],
        "b1": 1.0 - u["one_minus_b1"],
        "b2": 1.0 - u["one_minus_b2"],
        "eps": u["eps"],
        "l1": u["l1"],
        "l2": u["l2"],
        "linear_decay": np.minimum(u["linear_decay"] * scale, 1.0),
        "exponential_decay": np.minimum(u["exponential_decay"] * scale, 1.0),
    }
    trials = {k: v.astype(np.float32) for k, v in trials.items()}
    return Search(f"adam8p/random{num_trials}(seed={seed},T={num_steps})", BaselineMaker("adam8p"), trials)


# --- NAdamW with warmup and cosine decay (the ordered list) --------------------------------------

# The space the ordered NAdamW list is sampled from (log-uniform unless marked uniform).
NADAMW_SPACE = {
    "learning_rate": (1e-5, 1.0),
    "one_minus_b1": (1e-3, 1.0),
    "one_minus_b2": (1e-5, 1.0),
    "eps": (1e-10, 1e3),
    "weight_decay": (1e-7, 1e-1),  # decoupled (AdamW), scaled by the scheduled learning rate
    "l2": (1e-7, 1e-1),  # coupled: added to the gradient
    "warmup_fraction": (0.0, 0.1),  # uniform
    "constant_fraction": (0.0, 1.0),  # uniform, then raised to at least warmup_fraction
    "min_lr_mult": (1e-3, 1.0),
}
NADAMW_KEYS = (
    "learning_rate",
    "b1",
    "b2",
    "eps",
    "weight_decay",
    "l2",
    "warmup_fraction",
    "constant_fraction",
    "min_lr_mult",
)


def nadamw_schedule(h: dict) -> Callable[[jax.Array], jax.Array]:
    r"""η_t = η · min(1, (t+1)/(w T)) · (m + (1−m) · ½(1 + cos(π · clip((t − cT)/(T − cT), 0, 1)))),
    with w = warmup_fraction, c = constant_fraction, m = min_lr_mult, T = num_steps."""
    T = jnp.asarray(h["num_steps"], jnp.float32)

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        warm = jnp.minimum(1.0, (t + 1.0) / jnp.maximum(h["warmup_fraction"] * T, 1.0))
        start = h["constant_fraction"] * T
        frac = jnp.clip((t - start) / jnp.maximum(T - start, 1.0), 0.0, 1.0)
        decay = h["min_lr_mult"] + (1.0 - h["min_lr_mult"]) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
        return h["learning_rate"] * warm * decay

    return schedule


def nadamw_cosine(h: dict) -> optax.GradientTransformationExtraArgs:
    r"""NAdamW with linear warmup, a constant phase and cosine decay (opt_list's NadamWCosineDecay).

    .. math::
        \tilde g = g + l_2 θ; \quad m, v \text{ as in Adam on } \tilde g; \quad
        u_t = −η_t \left(\frac{β_1 \hat m_t + (1−β_1) \tilde g_t/(1−β_1^{t+1})}{\sqrt{\hat v_t} + ε}
              + wd · θ_t\right)

    with η_t from `nadamw_schedule`. ``h`` holds `NADAMW_KEYS` and ``num_steps``; values may be traced.

    References: Metz, Maheswaranathan, Sun, Freeman, Poole, Sohl-Dickstein 2020, "Using a thousand
    optimization tasks to learn hyperparameter search strategies", arXiv:2002.11887 (opt_list).
    """
    return optax.with_extra_args_support(
        optax.chain(
            optax.add_decayed_weights(h["l2"]),
            optax.scale_by_adam(b1=h["b1"], b2=h["b2"], eps=h["eps"], nesterov=True),
            optax.add_decayed_weights(h["weight_decay"]),
            optax.scale_by_learning_rate(nadamw_schedule(h)),
        )
    )


def sample_nadamw(num: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``num`` configurations from `NADAMW_SPACE` (dict name -> (num,) float32)."""
    rng = np.random.default_rng(seed)
    s = NADAMW_SPACE
    u = {
        k: _log_uniform(rng, *s[k], num)
        for k in ("learning_rate", "one_minus_b1", "one_minus_b2", "eps", "weight_decay", "l2", "min_lr_mult")
    }
    warmup = rng.uniform(*s["warmup_fraction"], num)
    out = {
        "learning_rate": u["learning_rate"],
        "b1": 1.0 - u["one_minus_b1"],
        "b2": 1.0 - u["one_minus_b2"],
        "eps": u["eps"],
        "weight_decay": u["weight_decay"],
        "l2": u["l2"],
        "warmup_fraction": warmup,
        "constant_fraction": np.maximum(rng.uniform(*s["constant_fraction"], num), warmup),
        "min_lr_mult": u["min_lr_mult"],
    }
    return {k: out[k].astype(np.float32) for k in NADAMW_KEYS}


NADAMW_LIST_PATH = os.path.join(os.path.dirname(__file__), "nadamw_list.json")


def load_nadamw_list(path: str = NADAMW_LIST_PATH) -> list[dict[str, float]]:
    """The ordered NAdamW configurations (best first), built by `build_nadamw_list`."""
    with open(path) as f:
        return json.load(f)["configs"]


def nadamw_list_search(num_trials: int = 10, num_steps: int = 1000, path: str = NADAMW_LIST_PATH) -> Search:
    """The first ``num_trials`` configurations of the ordered NAdamW list, for ``num_steps`` steps."""
    configs = load_nadamw_list(path)
    check_range("nadamw list num_trials", num_trials, 1, len(configs))
    trials = {k: np.asarray([c[k] for c in configs[:num_trials]], np.float32) for k in NADAMW_KEYS}
    trials["num_steps"] = np.full((num_trials,), num_steps, np.float32)
    return Search(f"nadamw-list/first{num_trials}(T={num_steps})", nadamw_cosine, trials)


# --- running, with an on-disk cache ----------------------------------------------------------------


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


def _run_key(task: Task, seed: int) -> jax.Array:
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


def _save_npz(path: str, result: SearchResult) -> None:
    """Write atomically: a temporary file in the same directory, then `os.replace`."""
    c = result.curves
    arrays = {"train_loss": c.train_loss, "eval_steps": c.eval_steps, "diverged_step": c.diverged_step}
    arrays.update({f"eval/{s}/{m}": v for s, ms in c.eval.items() for m, v in ms.items()})
    meta = json.dumps({"task": result.task, "search": result.search, "seconds": result.seconds})
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.asarray(meta), **{k: np.asarray(v) for k, v in arrays.items()})
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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
        _run_key(task, seed),
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
    config = dict(
        _static(num_steps, num_seeds, eval_every, eval_batches), eval_splits=list(EVAL_SPLITS), seed=seed
    )
    path = _cache_path(cache, task, search, config) if cache else None
    if path and os.path.exists(path):
        return _load_npz(path)
    if require_cache:
        raise ConfigError(
            f"no cached result for {search.name} on {task.name} in {cache}; run `lopt eval` first."
        )
    trials = jax.tree.map(jnp.asarray, search.trials)
    args = (_run_key(task, seed), task, trials)
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
    config = dict(
        _static(num_steps, num_seeds, eval_every, eval_batches), eval_splits=list(EVAL_SPLITS), seed=seed
    )
    return bool(cache) and os.path.exists(_cache_path(cache, task, search, config))


# --- scores, normalization, selection --------------------------------------------------------------


def score(result: SearchResult, split: str = "outer_valid", metric: str = "loss") -> np.ndarray:
    """(C,) final ``metric`` on ``split`` (at the last evaluation step), median over seeds."""
    return np.median(np.asarray(result.curves.eval[split][metric])[..., -1], axis=-1)


def failed(result: SearchResult) -> np.ndarray:
    """(C,) bool: some seed diverged, or the final outer-valid or test loss is not finite."""
    c = result.curves
    num_steps = c.train_loss.shape[-1]
    bad = (np.asarray(c.diverged_step) < num_steps).any(-1)
    for split in ("outer_valid", "test"):
        if split in c.eval:
            bad |= ~np.isfinite(np.asarray(c.eval[split]["loss"])[..., -1]).all(-1)
    return bad


def init_loss(result: SearchResult, split: str = "outer_valid") -> float:
    """Loss at initialization (step 0) on ``split``, median over seeds (the same for every trial)."""
    return float(np.median(np.asarray(result.curves.eval[split]["loss"])[0, :, 0]))


def best_scores(results: Sequence[SearchResult], split: str = "outer_valid") -> float:
    """L_best: the lowest score of any non-failed trial among ``results`` (runs on one task);
    the lowest finite score when all failed, L_init when none is finite."""
    scores = np.concatenate([score(r, split) for r in results])
    ok = np.concatenate([~failed(r) for r in results]) & np.isfinite(scores)
    if ok.any():
        return float(scores[ok].min())
    finite = scores[np.isfinite(scores)]
    return float(finite.min()) if finite.size else init_loss(results[0], split)


def normalize(loss: Any, best: Any, init: Any, clip: float = CLIP) -> np.ndarray:
    """clip((L − L_best) / (L_init − L_best), 0, clip); a non-finite L gives ``clip``.

    Broadcasts. The gap L_init − L_best is floored at 1e-8 · max(1, |L_init|) so a task where no run
    improved on the initialization does not divide by zero (every other run then counts as ``clip``).
    """
    loss, best, init = (np.asarray(x, np.float64) for x in (loss, best, init))
    gap = np.maximum(init - best, 1e-8 * np.maximum(1.0, np.abs(init)))
    with np.errstate(invalid="ignore", over="ignore"):
        n = (loss - best) / gap
    return np.where(np.isfinite(n), np.clip(n, 0.0, clip), clip)


def select_per_task(scores: np.ndarray, failed: np.ndarray) -> int:
    """Index of the lowest score among trials that did not fail; -1 when every trial failed."""
    scores = np.where(failed | ~np.isfinite(scores), np.inf, np.asarray(scores, np.float64))
    return -1 if np.isinf(scores).all() else int(np.argmin(scores))


def select_global(norm: np.ndarray, failed: np.ndarray) -> int:
    """The trial with the lowest mean normalized loss over tasks; ``norm`` and ``failed`` are (T, C).

    Failed entries count as `CLIP`. A trial that failed on any task is never chosen while some trial
    failed on none; otherwise the lowest mean wins (and reports diverged on the tasks it failed)."""
    norm = np.where(failed, CLIP, np.asarray(norm, np.float64))
    mean = norm.mean(0)
    ok = ~failed.any(0)
    return int(np.argmin(np.where(ok, mean, np.inf) if ok.any() else mean))


# --- methods ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Method:
    """How a search becomes one optimizer per task (see the module docstring).

    Attributes:
      name: the name in tables and on the command line, e.g. ``adam-lr-per-task``.
      search: the trials it chooses from (searches shared by methods run once per task).
      select: ``per_task``, ``global`` or ``fixed``.
      trials: use only the first ``trials`` trials of the search (None: all).
      doc: one line for the report.
    """

    name: str
    search: Search
    select: str = "per_task"
    trials: int | None = None
    doc: str = ""

    def __post_init__(self):
        check_choice(f"method {self.name!r} select", self.select, SELECTIONS)
        n = self.search.num_trials
        if self.trials is not None:
            check_range(f"method {self.name!r} trials", self.trials, 1, n)
        if self.select == "fixed" and (self.trials or n) != 1:
            raise ConfigError(f"method {self.name!r} is fixed but its search has {n} trials: give trials=1.")

    @property
    def num_trials(self) -> int:
        return self.trials or self.search.num_trials


@dataclasses.dataclass(frozen=True)
class Budget:
    """What the named methods need to know: the horizon and their trial counts."""

    num_steps: int = 1000  # training steps (schedules and Adam8p's decays depend on it)
    adam8p_trials: int = 10  # random-search trials of Adam8p per task
    nadamw_trials: int = 10  # first N entries of the ordered NAdamW list
    seed: int = 0  # seed of the Adam8p random search


METHODS: dict[str, Callable[[Budget], Method]] = {
    "adam-lr-global": lambda b: Method(
        "adam-lr-global",
        lr_search("adam"),
        "global",
        doc="Adam, the one of 15 learning rates best on average over the suite",
    ),
    "adam-lr-per-task": lambda b: Method(
        "adam-lr-per-task", lr_search("adam"), "per_task", doc="Adam, best of 15 learning rates on each task"
    ),
    "adam8p-per-task": lambda b: Method(
        "adam8p-per-task",
        adam8p_search(b.adam8p_trials, b.num_steps, b.seed),
        doc=f"Adam8p, best of {b.adam8p_trials} random trials on each task",
    ),
    "nadamw-list": lambda b: Method(
        "nadamw-list",
        nadamw_list_search(b.nadamw_trials, b.num_steps),
        doc=f"NAdamW, best of the first {b.nadamw_trials} entries of the ordered list",
    ),
    "nadamw-list-first1": lambda b: Method(
        "nadamw-list-first1",
        nadamw_list_search(b.nadamw_trials, b.num_steps),
        "fixed",
        trials=1,
        doc="NAdamW, the first entry of the list (no tuning)",
    ),
    "adam-cosine-lr-per-task": lambda b: Method(
        "adam-cosine-lr-per-task",
        lr_search("adam_cosine"),
        doc="Adam with 5% warmup and cosine decay over the run, best of 15 peak learning rates on each task",
    ),
    "lookahead-adam-lr-per-task": lambda b: Method(
        "lookahead-adam-lr-per-task",
        lr_search("adam", lookahead_k=5, lookahead_alpha=0.5),
        doc="Lookahead(Adam) k=5 alpha=0.5, best of 15 learning rates on each task",
    ),
}
DEFAULT_METHODS = (
    "adam-lr-global",
    "adam-lr-per-task",
    "adam-cosine-lr-per-task",
    "adam8p-per-task",
    "nadamw-list",
    "lookahead-adam-lr-per-task",
)


def learned_method(name: str, learned: Any, theta: Any, doc: str = "") -> Method:
    """A learned optimizer with fixed weights as a method: one trial, no tuning (``select="fixed"``)."""
    search = fixed_search(f"{name}({learned.name})", make=learned.transform, hparams=theta)
    return Method(name, search, "fixed", doc=doc or f"learned optimizer {learned.name}, no tuning")


def get_method(name: str, budget: Budget = Budget()) -> Method:
    """A named method: a `METHODS` entry; a shipped pretrained optimizer (`lopt.PRETRAINED`) or
    ``theta:<path>`` (a `save_theta` file), run without tuning; a `BASELINES` name (its defaults, no
    tuning); or ``<baseline>-lr-per-task`` / ``<baseline>-lr-global`` (its learning rate tuned on
    `ADAM_LR_GRID`)."""
    if name in METHODS:
        return METHODS[name](budget)
    if name in PRETRAINED:
        learned, theta = load_pretrained(name)
        return learned_method(name, learned, theta, f"pretrained {name}: {PRETRAINED[name].summary}; no tuning")
    if name.startswith("theta:"):
        learned, theta = load_theta(name[len("theta:") :])
        return learned_method(name, learned, theta, f"learned optimizer {learned.name} from {name[6:]}; no tuning")
    if name in BASELINES:
        b = BASELINES[name]
        hparams = {k: np.float32(v) for k, v in b.defaults.items()}
        return Method(
            name,
            fixed_search(name, make=BaselineMaker(name), hparams=hparams),
            "fixed",
            doc=f"{name} at its defaults {b.defaults} (no tuning)",
        )
    for suffix, select in (("-lr-per-task", "per_task"), ("-lr-global", "global")):
        if name.endswith(suffix) and name[: -len(suffix)] in BASELINES:
            return Method(
                name,
                lr_search(name[: -len(suffix)]),
                select,
                doc=f"{name[: -len(suffix)]}, learning rate from 15 tuned {select.replace('_', ' ')}",
            )
    raise unknown_name(
        "optimizer",
        name,
        [*METHODS, *PRETRAINED, *BASELINES, "<baseline>-lr-per-task", "<baseline>-lr-global", "theta:<path>"],
    )


# --- building the ordered NAdamW list (opt_list) ----------------------------------------------------


def greedy_order(norm: np.ndarray, length: int | None = None) -> list[int]:
    """opt_list's greedy ordering of K configurations by their (K, T) normalized losses on T tasks.

    Each next configuration is the one that most lowers the mean over tasks of the best-so-far
    normalized loss, min(best_t, n_kt); ties (e.g. once some task can no longer improve) go to the
    configuration with the lower mean normalized loss of its own, then to the lower index.
    """
    norm = np.asarray(norm, np.float64)
    k, _ = norm.shape
    length = k if length is None else min(length, k)
    best = np.full(norm.shape[1], np.inf)
    own = norm.mean(1)
    order: list[int] = []
    for _ in range(length):
        gain = np.minimum(best[None], norm).mean(1)  # (K,) mean best-so-far if k were added
        gain[order] = np.inf
        own_masked = np.where(np.isinf(gain), np.inf, own)
        i = int(np.lexsort((np.arange(k), own_masked, gain))[0])
        order.append(i)
        best = np.minimum(best, norm[i])
    return order


def build_nadamw_list(
    num_configs: int = 256,
    candidates: int = 3,
    steps: int = 500,
    seeds: int = 1,
    eval_every: int = 100,
    keep: int = 100,
    seed: int = 0,
    out: str = NADAMW_LIST_PATH,
    cache: str = "",
) -> dict:
    """Build the ordered NAdamW list on the *train* suite and write it to ``out`` (JSON).

    Samples ``num_configs`` configurations from `NADAMW_SPACE`, trains each on one task per family of
    the train suite (of ``candidates`` sampled tasks, the one with the fewest FLOPs per step, to
    keep the build affordable), normalizes the final outer-valid losses per task and orders the
    configurations with `greedy_order`; the first ``keep`` are written with the command, budget,
    tasks and per-prefix mean best-so-far normalized loss. The test suite is never touched.
    """
    from lopt.tasks import profile
    from lopt.tasks.suites import get_suite

    t0 = time.perf_counter()
    trials = sample_nadamw(num_configs, seed)
    search = Search(
        f"nadamw-space/random{num_configs}(seed={seed},T={steps})",
        nadamw_cosine,
        {**trials, "num_steps": np.full((num_configs,), steps, np.float32)},
    )
    suite = get_suite("train")
    tasks = []
    for i, family in enumerate(suite.families()):
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), i), candidates)
        options = [family.task(family.sample(k)) for k in keys]
        tasks.append(min(options, key=profile.flops_per_step))
    norm, names, seconds = [], [], []
    for task in tasks:
        res = run_search(
            task,
            search,
            num_steps=steps,
            num_seeds=seeds,
            eval_every=eval_every,
            seed=seed,
            cache=cache or None,
        )
        n = normalize(score(res), best_scores([res]), init_loss(res))
        norm.append(np.where(failed(res), CLIP, n))
        names.append(task.name)
        seconds.append(res.seconds["compile_seconds"] + res.seconds["run_seconds"])
        print(
            f"  {task.name}: {seconds[-1]:.0f} s, {int(failed(res).sum())} of {num_configs} failed",
            flush=True,
        )
    norm = np.stack(norm, 1)  # (K, T)
    order = greedy_order(norm, keep)
    best = np.full(norm.shape[1], np.inf)
    curve = []
    for i in order:
        best = np.minimum(best, norm[i])
        curve.append(round(float(best.mean()), 5))
    args = (
        f"--num-configs {num_configs} --candidates {candidates} --steps {steps} --seeds {seeds} "
        f"--eval-every {eval_every} --keep {keep} --seed {seed}"
    )
    doc = {
        "description": "NAdamW (warmup + cosine decay) configurations ordered greedily, opt_list style "
        "(Metz et al. 2020, arXiv:2002.11887): each next entry most lowers the mean over the "
        "train-suite tasks of the best-so-far normalized final outer-valid loss (L_best = the best of "
        "the sampled configs on each task). Once every task has its best config in the list "
        "(mean_best_so_far = 0), the rest is ordered by each config's own mean normalized loss. "
        "Use the first N.",
        "command": f"python -m lopt.tuning {args}",
        "budget": {
            "num_configs": num_configs,
            "steps": steps,
            "seeds": seeds,
            "eval_every": eval_every,
            "tasks": len(tasks),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "backend": f"{jax.default_backend()} ({os.cpu_count()} cpus), jax {jax.__version__}",
        },
        "space": {k: list(v) for k, v in NADAMW_SPACE.items()},
        "normalization": f"clip((L - L_best) / (L_init - L_best), 0, {CLIP}) per task; failed runs = {CLIP}",
        "tasks": names,
        "mean_best_so_far": curve,
        "configs": [{k: float(trials[k][i]) for k in NADAMW_KEYS} | {"sampled_index": i} for i in order],
    }
    with open(out + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(out + ".tmp", out)
    return doc


if __name__ == "__main__":
    import tyro

    tyro.cli(build_nadamw_list)
