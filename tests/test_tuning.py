"""`lopt.tuning`: normalization, selection (per task, global, diverged never chosen), the greedy
NAdamW ordering, the search spaces against optax, and the on-disk cache (hit without re-running)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import tuning
from lopt.evaluate import Curves
from lopt.optimizers import get_baseline
from lopt.tasks import get_family
from lopt.tuning import (
    CLIP,
    Method,
    Search,
    SearchResult,
    adam8p_search,
    failed,
    get_method,
    greedy_order,
    normalize,
    score,
    select_global,
    select_per_task,
)
from lopt.validate import ConfigError, UnknownNameError


def synthetic(valid, test=None, init=10.0, diverged=None, name="s", task="t") -> SearchResult:
    """A SearchResult whose final outer-valid (and test) losses are ``valid`` (C, S); steps = 4."""
    valid = np.asarray(valid, np.float32)
    test = valid if test is None else np.asarray(test, np.float32)
    c, s = valid.shape

    def ev(final):
        return np.stack([np.full((c, s), init, np.float32), final], -1)  # (C, S, 2): steps 0 and 4

    div = np.full((c, s), 4, np.int32) if diverged is None else np.asarray(diverged, np.int32)
    curves = Curves(
        np.ones((c, s, 4), np.float32),
        np.array([0, 4]),
        {"outer_valid": {"loss": ev(valid)}, "test": {"loss": ev(test)}},
        div,
    )
    return SearchResult(task, name, curves, {"compile_seconds": 0.0, "run_seconds": 1.0}, cached=False)


def test_normalize_formula():
    # (L − L_best) / (L_init − L_best): (3 − 1) / (5 − 1) = 0.5
    np.testing.assert_allclose(normalize(3.0, 1.0, 5.0), 0.5)
    np.testing.assert_allclose(normalize([0.5, 1.0, 5.0, 8.0, 100.0], 1.0, 5.0), [0.0, 0.0, 1.0, 1.75, CLIP])
    # negative losses (a flow's NLL): (−2 − (−3)) / (1 − (−3)) = 0.25; never divides by the raw loss
    np.testing.assert_allclose(normalize(-2.0, -3.0, 1.0), 0.25)
    np.testing.assert_allclose(normalize([np.nan, np.inf], 1.0, 5.0), [CLIP, CLIP])
    # no run improved on the initialization: the best itself is 0, anything worse is CLIP
    np.testing.assert_allclose(normalize([2.0, 2.5], 2.0, 2.0), [0.0, CLIP])


def test_select_per_task_picks_hand_computed_argmin_and_never_a_diverged_run():
    # mean over seeds of the final outer-valid loss: [3, 1.5, 0.5, 2]; trial 2 diverged on seed 1
    valid = [[2.0, 4.0], [1.0, 2.0], [0.4, 0.6], [2.0, 2.0]]
    res = synthetic(valid, diverged=[[4, 4], [4, 4], [4, 3], [4, 4]])
    np.testing.assert_allclose(score(res), [3.0, 1.5, 0.5, 2.0])
    np.testing.assert_array_equal(failed(res), [False, False, True, False])
    assert select_per_task(score(res), failed(res)) == 1
    assert select_per_task(score(res), np.zeros(4, bool)) == 2
    # a non-finite final loss without a diverged training loss also counts as failed
    res = synthetic([[1.0, 1.0], [np.nan, 0.0]])
    assert failed(res).tolist() == [False, True] and select_per_task(score(res), failed(res)) == 0
    assert select_per_task(np.ones(3), np.ones(3, bool)) == -1


def test_select_global_on_a_hand_made_table():
    # normalized outer-valid losses, 3 tasks x 4 settings; setting 3 is best on average but diverged on task 2
    norm = np.array([[0.0, 0.5, 0.2, 0.0], [0.9, 0.0, 0.3, 0.0], [0.6, 0.4, 0.2, 0.0]])
    bad = np.zeros_like(norm, bool)
    bad[2, 3] = True
    # means with failures at CLIP: [0.5, 0.3, 0.2333, 0.6667]; setting 3 excluded anyway
    assert select_global(norm, bad) == 2
    assert select_global(norm, np.zeros_like(bad)) == 3
    # every setting failed on some task: the lowest mean with failures counted as CLIP,
    # [(2 + .9 + .6)/3, (.5 + 2 + .4)/3, (.2 + .3 + 2)/3, (2 + 0 + 0)/3] -> setting 3
    everywhere = np.zeros_like(bad)
    everywhere[[0, 1, 2, 0], [0, 1, 2, 3]] = True
    assert select_global(norm, everywhere) == 3


def test_compare_global_vs_per_task_on_three_tasks():
    from lopt.report import compare

    # final outer-valid losses (2 seeds, equal) of 4 settings on 3 tasks; init 10 on each task.
    table = {"a": [1.0, 5.0, 3.0, 0.5], "b": [9.0, 1.0, 2.0, 1.0], "c": [6.0, 4.0, 2.0, 1.0]}
    div = {"a": None, "b": None, "c": [[4, 4]] * 3 + [[2, 4]]}  # setting 3 diverges on task c
    results = {
        t: {"s": synthetic(np.repeat(np.array(v)[:, None], 2, 1), task=t, diverged=div[t])}
        for t, v in table.items()
    }
    search = Search("s", None, {"learning_rate": np.array([1.0, 2.0, 3.0, 4.0])})
    methods = [
        Method("g", search, "global"),
        Method("p", search, "per_task"),
        Method("first2", search, "per_task", trials=2),
    ]
    out = {(o.task, o.method): o for o in compare(results, methods)}
    # L_best over non-failed settings: a 0.5, b 1, c 2. Normalized (L − best)/(10 − best):
    #   a: [0.0526, 0.4737, 0.2632, 0]; b: [0.8889, 0, 0.1111, 0]; c: [0.5, 0.25, 0, CLIP]
    #   means: [0.4805, 0.2412, 0.1248, 0.6667]; setting 3 failed on c -> excluded. Global = 2.
    assert [out[t, "g"].trial for t in "abc"] == [2, 2, 2]
    assert [out[t, "p"].trial for t in "abc"] == [3, 1, 2]  # c: setting 3 diverged, never selected
    assert [out[t, "first2"].trial for t in "abc"] == [0, 1, 1]
    assert out["a", "p"].test_loss == pytest.approx(0.5)
    assert out["a", "g"].norm_test == pytest.approx((3.0 - 0.5) / 9.5)
    assert out["a", "g"].hparams == {"learning_rate": 3.0}


def test_greedy_order_hand_example():
    # c2 is best on average; then c0 and c1 each fix one task (tie: same own mean -> lower index)
    norm = np.array([[0.0, 1.0], [1.0, 0.0], [0.4, 0.4], [2.0, 2.0]])
    assert greedy_order(norm) == [2, 0, 1, 3]
    assert greedy_order(norm, 2) == [2, 0]


def test_nadamw_cosine_schedule_and_optax_reference():
    h = {
        "learning_rate": 0.1,
        "warmup_fraction": 0.1,
        "constant_fraction": 0.5,
        "min_lr_mult": 0.01,
        "num_steps": 100.0,
    }
    sched = tuning.nadamw_schedule(h)
    # warmup over 10 steps: (t+1)/10; constant to step 50; cosine to 0.001 at step 100
    np.testing.assert_allclose(
        [float(sched(t)) for t in (0, 4, 9, 30, 50, 75, 100)],
        [0.01, 0.05, 0.1, 0.1, 0.1, 0.001 + 0.099 * 0.5, 0.001],
        rtol=1e-5,
    )
    # no warmup, no decay, no l2: exactly optax.nadamw
    flat = {
        "learning_rate": 0.03,
        "b1": 0.8,
        "b2": 0.99,
        "eps": 1e-6,
        "weight_decay": 0.01,
        "l2": 0.0,
        "warmup_fraction": 0.0,
        "constant_fraction": 1.0,
        "min_lr_mult": 1.0,
        "num_steps": 50.0,
    }
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    ours, ref = tuning.nadamw_cosine(flat), optax.nadamw(0.03, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.01)
    s1, s2, p1, p2 = ours.init(params), ref.init(params), params, params
    for t in range(5):
        g = {"w": jnp.array([0.3, -1.0, 2.0]) * (t + 1)}
        u1, s1 = ours.update(g, s1, p1)
        u2, s2 = ref.update(g, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    np.testing.assert_allclose(p1["w"], p2["w"], rtol=1e-6)


def test_adam8p_search_samples_taskset_space_rescaled():
    s = adam8p_search(200, num_steps=1000, seed=3)
    t = s.trials
    assert s.num_trials == 200
    lo, hi = tuning.ADAM8P_SPACE["learning_rate"]
    assert (t["learning_rate"] >= lo * 0.999).all() and (t["learning_rate"] <= hi * 1.001).all()
    one_minus_b2 = 1.0 - t["b2"].astype(np.float64)
    assert one_minus_b2.min() >= 1e-6 * 0.5 and one_minus_b2.max() <= 1.0
    # TaskSet's decays are per step at 10k steps: x10 at 1000 steps
    assert t["linear_decay"].min() >= 1e-6 * 0.999 and t["linear_decay"].max() <= 1e-3 * 1.001
    assert t["exponential_decay"].max() <= 1e-2 * 1.001
    assert np.log10(t["l1"]).std() > 1.5  # log-uniform over 9 decades
    for i in range(5):  # every sample is a valid adam8p setting
        get_baseline("adam8p").resolve(s.describe(i))
    np.testing.assert_array_equal(adam8p_search(200, 1000, 3).trials["eps"], t["eps"])  # reproducible


def test_method_names_and_errors():
    assert get_method("adam-lr-per-task").search.num_trials == 15
    m = get_method("momentum-lr-global")
    assert m.select == "global" and m.search.make.baseline == "momentum"
    sgd = get_method("sgd")
    assert sgd.select == "fixed" and sgd.search.describe(0) == {"learning_rate": pytest.approx(1e-2)}
    with pytest.raises(UnknownNameError, match="adam-lr-per-task.*nadamw-list|nadamw-list.*adam-lr-per-task"):
        get_method("adamm")
    with pytest.raises(ConfigError, match="select"):
        Method("x", tuning.lr_search("adam"), "best")
    with pytest.raises(ConfigError, match="fixed"):
        Method("x", tuning.lr_search("adam"), "fixed")
    with pytest.raises(ConfigError, match="learning_rate"):
        tuning.lr_search("adam", [1e-3, 100.0])


def test_cache_returns_identical_numbers_without_rerunning(tmp_path, monkeypatch):
    family = get_family("quadratic", dims=(2,))
    task = family.task(family.sample(jax.random.key(0)))
    search = tuning.lr_search("sgd", [0.01, 0.1])
    calls = []
    real = tuning.cache.timed

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(tuning.cache, "timed", counting)
    run = {"num_steps": 8, "num_seeds": 2, "eval_every": 4, "cache": str(tmp_path)}
    first = tuning.run_search(task, search, **run)
    second = tuning.run_search(task, search, **run)
    assert len(calls) == 1 and not first.cached and second.cached
    for a, b in zip(jax.tree.leaves(first.curves), jax.tree.leaves(second.curves)):
        np.testing.assert_array_equal(a, b)
    assert second.seconds == first.seconds
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporaries
    tuning.run_search(task, search, **{**run, "num_seeds": 1})  # another budget is another entry
    assert len(calls) == 2
    other = tuning.lr_search("sgd", [0.01, 0.2])
    with pytest.raises(ConfigError, match="no cached result"):
        tuning.run_search(task, other, **run, require_cache=True)


def test_fixed_search_runs_a_plain_optax_optimizer_like_evaluate():
    """The seam for a learned optimizer: one fixed trial, run and cached like any search."""
    from lopt.evaluate import evaluate

    family = get_family("quadratic", dims=(2,))
    task = family.task(family.sample(jax.random.key(1)))
    opt = optax.sgd(0.1)
    method = Method("mine", tuning.fixed_search("mine", opt), "fixed")
    res = tuning.run_search(task, method.search, num_steps=8, num_seeds=2, eval_every=4)
    ref = evaluate(tuning.run_key(task, 0), task, opt, num_steps=8, num_seeds=2, eval_every=4)
    np.testing.assert_allclose(res.curves.train_loss[0], ref.train_loss, rtol=1e-6)
    np.testing.assert_allclose(res.curves.eval["test"]["loss"][0], ref.eval["test"]["loss"], rtol=1e-6)


def test_scores_are_medians_over_seeds():
    """One unlucky seed does not decide a selection: trial 0's seeds (1, 2, 30) score 2, trial 1's
    (3, 3, 3) score 3, so trial 0 is selected although its mean (11) is the worst."""
    result = synthetic([[1.0, 2.0, 30.0], [3.0, 3.0, 3.0]])
    np.testing.assert_allclose(score(result), [2.0, 3.0])
    assert select_per_task(score(result), failed(result)) == 0


def test_pretrained_and_theta_file_methods(tmp_path):
    """A shipped optimizer and a theta file are fixed methods whose single trial is their theta."""
    import lopt

    m = get_method("mlp-small-v1")
    learned, theta = lopt.load_pretrained("mlp-small-v1")
    assert m.select == "fixed" and m.num_trials == 1
    np.testing.assert_array_equal(m.search.trials["skip"][0], theta["skip"])
    lopt.save_theta(tmp_path / "t.safetensors", learned, theta)
    f = get_method(f"theta:{tmp_path / 't.safetensors'}")
    np.testing.assert_array_equal(f.search.trials["mlp"]["l0"]["w"][0], theta["mlp"]["l0"]["w"])
    with pytest.raises(UnknownNameError, match="mlp-small-v1"):
        get_method("no-such-optimizer")
