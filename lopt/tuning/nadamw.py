"""The ordered NAdamW list (opt_list): its search space, the search over its first N entries, and
the builder that orders it greedily on the train suite (``python -m lopt.tuning``).

The list is ``nadamw_list.json`` beside this file; the optimizer is
`lopt.optimizers.baselines.nadamw_cosine`.

References: Metz, Maheswaranathan, Sun, Freeman, Poole, Sohl-Dickstein 2020, "Using a thousand
optimization tasks to learn hyperparameter search strategies", arXiv:2002.11887 (opt_list).
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from lopt.optimizers.baselines import NADAMW_KEYS, nadamw_cosine
from lopt.serialization import atomic_write
from lopt.tuning.cache import run_search
from lopt.tuning.scoring import CLIP, best_scores, failed, init_loss, normalize, score
from lopt.tuning.searches import Search, _log_uniform
from lopt.validate import check_range

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


def _normalized(task, search: Search, run: dict) -> np.ndarray:
    """(K,) normalized final outer-valid loss of every configuration on ``task`` (failed: CLIP)."""
    res = run_search(task, search, **run)
    n = normalize(score(res), best_scores([res]), init_loss(res))
    seconds = res.seconds["compile_seconds"] + res.seconds["run_seconds"]
    print(
        f"  {task.name}: {seconds:.0f} s, {int(failed(res).sum())} of {search.num_trials} failed", flush=True
    )
    return np.where(failed(res), CLIP, n)


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
    tasks = get_suite("train").tasks(1, seed, candidates=candidates, cost=profile.flops_per_step)
    run = {
        "num_steps": steps,
        "num_seeds": seeds,
        "eval_every": eval_every,
        "seed": seed,
        "cache": cache or None,
    }
    norm = np.stack([_normalized(task, search, run) for task in tasks], 1)  # (K, T)
    order = greedy_order(norm, keep)
    budget = {
        "num_configs": num_configs,
        "steps": steps,
        "seeds": seeds,
        "eval_every": eval_every,
        "tasks": len(tasks),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "backend": f"{jax.default_backend()} ({os.cpu_count()} cpus), jax {jax.__version__}",
    }
    doc = _list_document(budget, candidates, keep, seed, [t.name for t in tasks], norm, order, trials)
    atomic_write(out, json.dumps(doc, indent=1).encode())
    return doc


def _list_document(
    budget: dict, candidates: int, keep: int, seed: int, tasks: list[str], norm: np.ndarray, order, trials
) -> dict:
    """The JSON document of the list: how it was built (command, budget, space, tasks), the mean
    best-so-far normalized loss of each prefix, and the configurations in order."""
    best = np.full(norm.shape[1], np.inf)
    curve = []
    for i in order:
        best = np.minimum(best, norm[i])
        curve.append(round(float(best.mean()), 5))
    args = (
        f"--num-configs {budget['num_configs']} --candidates {candidates} --steps {budget['steps']} "
        f"--seeds {budget['seeds']} --eval-every {budget['eval_every']} --keep {keep} --seed {seed}"
    )
    return {
        "description": "NAdamW (warmup + cosine decay) configurations ordered greedily, opt_list style "
        "(Metz et al. 2020, arXiv:2002.11887): each next entry most lowers the mean over the "
        "train-suite tasks of the best-so-far normalized final outer-valid loss (L_best = the best of "
        "the sampled configs on each task). Once every task has its best config in the list "
        "(mean_best_so_far = 0), the rest is ordered by each config's own mean normalized loss. "
        "Use the first N.",
        "command": f"python -m lopt.tuning {args}",
        "budget": budget,
        "space": {k: list(v) for k, v in NADAMW_SPACE.items()},
        "normalization": f"clip((L - L_best) / (L_init - L_best), 0, {CLIP}) per task; failed runs = {CLIP}",
        "tasks": tasks,
        "mean_best_so_far": curve,
        "configs": [{k: float(trials[k][i]) for k in NADAMW_KEYS} | {"sampled_index": i} for i in order],
    }
