"""The implicit-regularization study against closed forms: SGD and Adam land at the projection of
their start onto the valley, their first steps match hand-worked updates, the scan/vmap path
equals a plain Python loop, and the outputs (PNG, JSON) are written."""

import json

import jax
import numpy as np
import optax
import pytest

from lopt import implicit_reg as ir

SGD, ADAM, LEARNED = ir.default_optimizers()  # labels, in order


@pytest.fixture(scope="module")
def result():
    return ir.run_study(ir.default_optimizers())


def test_starts_are_off_the_valley_and_its_normal():
    s = ir.default_starts()
    assert s.shape == (ir.NUM_STARTS, 2) and s.dtype == np.float32
    s = s.astype(np.float64)
    assert np.abs(s[:, 0] - s[:, 1]).min() > 0.5  # initial loss > 0 everywhere
    assert np.abs(s.sum(-1)).min() > 0.5  # the projection is not the origin


@pytest.mark.parametrize("label", [SGD, ADAM])
def test_hand_designed_optimizers_land_at_the_projection(result, label):
    run, starts = result["runs"][label], result["starts"].astype(np.float64)
    x0_plus_y0 = starts.sum(-1)  # (S,)
    expected = np.stack([x0_plus_y0 / 2, x0_plus_y0 / 2], -1)  # (S, 2)
    np.testing.assert_allclose(run["final"], expected, atol=2e-6)
    np.testing.assert_allclose(run["norm"], np.abs(x0_plus_y0) / np.sqrt(2), atol=2e-6)
    np.testing.assert_allclose(result["projection"], expected, atol=1e-12)
    np.testing.assert_allclose(result["projection_norm"], np.abs(x0_plus_y0) / np.sqrt(2), atol=1e-12)
    # x + y is conserved along the whole path, not just at the end
    sums = np.repeat(x0_plus_y0[:, None], result["num_steps"] + 1, 1)  # (S, T+1)
    np.testing.assert_allclose(run["trajectories"].sum(-1), sums, atol=5e-6)
    assert run["final_loss"].max() < 1e-11


def test_first_steps_match_closed_forms(result):
    x0, y0 = result["starts"][0].astype(np.float64)
    g = np.array([x0 - y0, -(x0 - y0)])  # ∇f = (d, −d)
    p0 = np.array([x0, y0])
    sgd = p0 - ir.SGD_LR * g
    # Adam, step 1: m̂ = g, v̂ = g², so u = −lr · g / (|g| + eps) (optax default eps 1e-8)
    adam = p0 - ir.ADAM_LR * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(result["runs"][SGD]["trajectories"][0, 1], sgd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result["runs"][ADAM]["trajectories"][0, 1], adam, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(adam, p0 - ir.ADAM_LR * np.sign(g), atol=1e-8)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_scan_vmap_equals_a_python_loop(index):
    label, opt = list(ir.default_optimizers().items())[index]
    opt = optax.with_extra_args_support(opt)
    start, steps = ir.default_starts()[3], 50
    params = {"xy": jax.numpy.asarray(start)}
    state = opt.init(params)
    path = [np.asarray(params["xy"])]
    for _ in range(steps):
        loss, grads = jax.value_and_grad(ir.loss_fn)(params)
        updates, state = opt.update(grads, state, params, loss=loss)
        params = optax.apply_updates(params, updates)
        path.append(np.asarray(params["xy"]))
    traj = np.asarray(ir.trajectories(opt, start[None], steps))  # (1, T+1, 2)
    assert traj.shape == (1, steps + 1, 2) and traj.dtype == np.float32, label
    np.testing.assert_allclose(traj[0], np.stack(path), rtol=1e-5, atol=1e-6, err_msg=label)


def test_learned_optimizer_is_finite_and_reduces_the_loss(result):
    run = result["runs"][LEARNED]
    assert np.isfinite(run["trajectories"]).all()
    assert (run["final_loss"] < run["initial_loss"]).all(), (run["final_loss"], run["initial_loss"])


def test_summary_rows(result):
    rows = {r["optimizer"]: r for r in ir.summary_rows(result)}
    assert list(rows) == [SGD, ADAM, LEARNED]
    for label, r in rows.items():
        run = result["runs"][label]
        assert r["final_loss"] == pytest.approx(run["final_loss"].mean())
        assert r["solution_norm"] == pytest.approx(run["norm"].mean())
        assert r["projection_norm"] == pytest.approx(result["projection_norm"].mean())
        assert r["ratio"] == pytest.approx(r["solution_norm"] / r["projection_norm"])
        assert r["valley_drift"] == pytest.approx(run["drift"].mean())
        assert r["num_starts"] == ir.NUM_STARTS
    for label in (SGD, ADAM):
        assert rows[label]["ratio"] == pytest.approx(1.0, abs=1e-5)
        assert rows[label]["valley_drift"] == pytest.approx(0.0, abs=2e-6)
        assert rows[label]["starts_shrunk"] == 0


def test_main_writes_a_png_and_a_json_that_round_trips(tmp_path, capsys):
    summary = ir.main(str(tmp_path))
    png = tmp_path / "implicit_reg.png"
    assert png.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "implicit_reg.json", encoding="utf-8") as f:
        assert json.load(f) == summary
    assert [r["optimizer"] for r in summary["rows"]] == [SGD, ADAM, LEARNED]
    assert np.asarray(summary["final_points"][SGD]).shape == (ir.NUM_STARTS, 2)
    assert LEARNED in capsys.readouterr().out
