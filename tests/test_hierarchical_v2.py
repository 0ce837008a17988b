"""`hierarchical_v2`: the documented update RMS, exact oddness in the gradient, no drift, the
schedule's values, the fraction feed, permutation equivariance, scale-free features, the
required ``num_steps``, and the fused update against a float64 NumPy reference."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt.optimizers.learned import LEARNED, ThetaMismatchError, load_theta, save_theta, schedule
from lopt.optimizers.learned.hierarchical import CLIP_DECAY, CLIP_MULT, shape_features
from lopt.optimizers.learned.hierarchical_v2 import EPS_ABS, EPS_REL, tensor_features

V2 = LEARNED["hierarchical_v2"]
T = 40


def perturbed(theta, scale=0.5, seed=1):
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )


def params_tree():
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    return {
        "w": jax.random.normal(k1, (7, 5)),
        "b": 0.1 * jax.random.normal(k2, (5,)),
        "s": jax.random.normal(k3, ()),
    }


def grad_seq(steps, seed=4):
    keys = jax.random.split(jax.random.key(seed), steps)
    return [
        jax.tree.map(lambda p, k=k: jax.random.normal(k, jnp.shape(p)) * 0.3, params_tree()) for k in keys
    ]


# one compiled step for every test (theta is an argument); compiled without LLVM's optimizations,
# about twice as fast to build at these sizes
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@jit
def _step(theta, grads, state, params, loss, num_steps):
    return V2().transform(theta).update(grads, state, params, loss=loss, num_steps=num_steps)


def run_fixed_params(theta, grads, params=None):
    """Updates at fixed params for a given gradient sequence (the state evolves, the params do not)."""
    params = params_tree() if params is None else params
    state, out = V2().transform(theta).init(params), []
    for t, g in enumerate(grads):
        u, state = _step(theta, g, state, params, jnp.float32(1.0 + 0.1 * t), jnp.int32(T))
        out.append(u)
    return out, state


def rms(x):
    return float(jnp.sqrt(jnp.mean(jnp.square(x))))


def test_update_rms_is_the_step_size_times_the_tensor_factor():
    learned = V2()
    theta = perturbed(learned.init(jax.random.key(0)))
    theta["to_step"] = jax.tree.map(jnp.zeros_like, theta["to_step"])  # factor exactly 1
    updates, _ = run_fixed_params(theta, grad_seq(12))
    for t, u in enumerate(updates):
        eta = float(learned.step_size(theta, t, T))
        for name, leaf in u.items():
            assert rms(leaf) == pytest.approx(eta, rel=1e-5), (t, name)


def test_the_tensor_factor_stays_in_its_range():
    learned = V2()
    theta = perturbed(learned.init(jax.random.key(0)), scale=3.0)
    updates, _ = run_fixed_params(theta, grad_seq(6))
    r = learned.config.tensor_range
    for t, u in enumerate(updates):
        eta = float(learned.step_size(theta, t, T))
        for leaf in u.values():
            assert eta / r * (1 - 1e-5) <= rms(leaf) <= eta * r * (1 + 1e-5)


def test_flipping_the_gradient_history_flips_every_update_exactly():
    learned = V2()
    theta = perturbed(learned.init(jax.random.key(0)))
    grads = grad_seq(10)
    a, _ = run_fixed_params(theta, grads)
    b, _ = run_fixed_params(theta, [jax.tree.map(jnp.negative, g) for g in grads])
    for ua, ub in zip(a, b):
        for x, y in zip(jax.tree.leaves(ua), jax.tree.leaves(ub)):
            np.testing.assert_array_equal(np.asarray(x), -np.asarray(y))


def test_no_drift_at_a_zero_gradient():
    """Zero gradients from the start: the update is exactly 0 (no term from θ, v or a bias)."""
    learned = V2()
    theta = perturbed(learned.init(jax.random.key(0)), scale=2.0)
    zeros = [jax.tree.map(jnp.zeros_like, params_tree()) for _ in range(5)]
    updates, _ = run_fixed_params(theta, zeros)
    assert all(float(jnp.max(jnp.abs(x))) == 0.0 for u in updates for x in jax.tree.leaves(u))


def test_schedule_values_at_the_start_middle_and_end():
    learned = V2()
    cfg, theta = learned.config, learned.init(jax.random.key(0))
    peak = cfg.peak
    assert float(learned.step_size(theta, 0, 1000)) == pytest.approx(
        peak * (1 / 1000 / cfg.warmup) * (cfg.final + (1 - cfg.final) * 0.5 * (1 + math.cos(math.pi / 1000))),
        rel=1e-5,
    )
    assert float(learned.step_size(theta, 499, 1000)) == pytest.approx(
        peak * (1 + cfg.final) / 2, rel=1e-5
    )  # f = 1/2
    assert float(learned.step_size(theta, 999, 1000)) == pytest.approx(peak * cfg.final, rel=1e-5)  # f = 1
    assert float(learned.step_size(theta, 5000, 1000)) == pytest.approx(peak * cfg.final, rel=1e-5)  # past T
    w = int(cfg.warmup * 1000)
    assert float(learned.step_size(theta, w - 1, 1000)) == pytest.approx(
        peak * (cfg.final + (1 - cfg.final) * 0.5 * (1 + math.cos(math.pi * cfg.warmup))), rel=1e-5
    )  # the end of the warmup: the cosine's value there
    theta = {**theta, "log_step": jnp.float32(math.log(0.1 / peak) / cfg.log_step_mult)}  # λ for a 0.1 peak
    assert float(learned.step_size(theta, 499, 1000)) == pytest.approx(0.1 * (1 + cfg.final) / 2, rel=1e-4)
    f = schedule.fraction(jnp.arange(4), 4)
    np.testing.assert_allclose(np.asarray(f), [0.25, 0.5, 0.75, 1.0])


def test_num_steps_is_required_and_the_update_keyword_wins():
    learned = V2()
    theta = learned.init(jax.random.key(0))
    params, grads = params_tree(), grad_seq(1)[0]
    with pytest.raises(ValueError, match="num_steps=T"):
        opt = learned.transform(theta)
        jax.eval_shape(opt.update, grads, opt.init(params), params)
    state = learned.transform(theta).init(params)
    bound, _ = jit(lambda g, s, p: learned.transform(theta, num_steps=T).update(g, s, p))(
        grads, state, params
    )
    late, _ = _step(theta, grads, state, params, None, jnp.int32(T))  # unbound; the keyword gives T
    for x, y in zip(jax.tree.leaves(bound), jax.tree.leaves(late)):  # two programs: equal up to rounding
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=0)


def test_permuting_a_tensors_entries_permutes_its_update():
    learned = V2()
    theta = perturbed(learned.init(jax.random.key(0)))
    perm = np.random.default_rng(0).permutation(35)
    grads = grad_seq(4)
    a, _ = run_fixed_params(theta, grads)
    params = params_tree()
    shuffle = {**params, "w": params["w"].reshape(-1)[perm].reshape(7, 5)}
    b, _ = run_fixed_params(
        theta, [{**g, "w": g["w"].reshape(-1)[perm].reshape(7, 5)} for g in grads], shuffle
    )
    for ua, ub in zip(a, b):
        np.testing.assert_allclose(
            np.asarray(ub["w"]).reshape(-1), np.asarray(ua["w"]).reshape(-1)[perm], rtol=2e-5, atol=1e-9
        )
        np.testing.assert_allclose(np.asarray(ub["b"]), np.asarray(ua["b"]), rtol=2e-5, atol=1e-9)


def test_features_are_scale_free_and_blank_entries_give_zero():
    cfg = V2().config
    key = jax.random.key(0)
    g = jax.random.normal(key, (50,)).at[:10].set(0.0)  # ten entries that never see a gradient
    moms = tuple((1 - b) * g for b in cfg.mom_decays)
    rmss = tuple((1 - c) * g * g for c in cfg.rms_decays)
    odd, scale, even, _ = tensor_features(cfg, g, moms, rmss, jnp.mean(g * g))
    c = 1e4
    odd_c, scale_c, even_c, _ = tensor_features(
        cfg, c * g, tuple(c * m for m in moms), tuple(c * c * v for v in rmss), jnp.mean(c * c * g * g)
    )
    for x, s, xc, sc in zip(odd, scale, odd_c, scale_c):
        np.testing.assert_allclose(np.asarray(x * s), np.asarray(xc * sc), rtol=1e-5, atol=1e-7)
    for e, ec in zip(even, even_c):
        np.testing.assert_allclose(np.asarray(e), np.asarray(ec), rtol=1e-5, atol=1e-7)
    assert all(float(jnp.max(jnp.abs(x[:10]))) == 0.0 for x in odd + even)  # blank entries: 0, not 1e12


def test_a_theta_of_another_architecture_fails_with_what_differs(tmp_path):
    learned = V2()
    save_theta(tmp_path / "v2.safetensors", learned, learned.init(jax.random.key(0)))
    assert load_theta(tmp_path / "v2.safetensors")[0] == learned
    with pytest.raises(ThetaMismatchError, match="hierarchical"):
        load_theta(tmp_path / "v2.safetensors", LEARNED["hierarchical"]())


# --- the fused update against a float64 NumPy reference ------------------------------------------------


def _sig(x):
    return 1 / (1 + np.exp(-x))


def reference_update(learned, theta, grads, state, params, loss, num_steps):
    """One step in float64 NumPy with stacked feature matrices; returns {name: update}."""
    cfg = learned.config
    th = jax.tree.map(lambda x: np.asarray(x, np.float64), theta)
    count = int(state.count)
    t_clip = count + 1
    clip = float(state.clip_ema) / (1 - CLIP_DECAY**t_clip) * CLIP_MULT
    # loss features: the (shared, separately tested) hierarchical code
    from lopt.optimizers.learned.hierarchical import loss_features

    _, _, loss_feats = loss_features(state, jnp.float32(loss), None)
    loss_feats = np.asarray(loss_feats, np.float64)
    f = min((count + 1) / num_steps, 1.0)
    s = min(1.0, f / cfg.warmup) * (cfg.final + (1 - cfg.final) * 0.5 * (1 + math.cos(math.pi * f)))
    frac = np.array([f, math.cos(math.pi * f), s])
    names = sorted(grads)  # jax.tree.leaves order of a dict
    per, zs = [], []
    for name in names:
        g = np.clip(np.asarray(grads[name], np.float64).reshape(-1), -clip, clip)
        p = np.asarray(params[name], np.float64).reshape(-1)
        moms = [
            np.asarray(state.moms[j][name], np.float64).reshape(-1) * b + (1 - b) * g
            for j, b in enumerate(cfg.mom_decays)
        ]
        rmss = [
            np.asarray(state.rmss[j][name], np.float64).reshape(-1) * c + (1 - c) * g * g
            for j, c in enumerate(cfg.rms_decays)
        ]
        n = g.size
        eps = [EPS_REL * v.mean() + EPS_ABS for v in rmss]
        odd = np.stack(
            [g, *moms, *[m / np.sqrt(v + e) for m in moms for v, e in zip(rmss, eps)]], 1
        )  # (n, Fo)
        odd_hat = odd / np.sqrt(np.mean(odd**2, 0) + 1e-30)
        even = np.stack([np.sqrt(v / (v.mean() + EPS_ABS)) for v in rmss], 1)
        mm = np.concatenate(moms)
        vv = np.concatenate(rmss)

        def lg(x):
            return np.clip(np.log(abs(x) + 1e-8), -5, 5)

        mean_g2 = np.mean(g**2)
        z = [
            lg(mm.mean()),
            lg(max(np.mean(mm**2) - mm.mean() ** 2, 0)),
            lg(vv.mean()),
            lg(max(np.mean(vv**2) - vv.mean() ** 2, 0)),
            lg(p.mean()),
            np.sign(p.mean()),
            lg(max(np.mean(p**2) - p.mean() ** 2, 0)),
            lg(np.sqrt(mean_g2 * n)),
            lg(np.sqrt(np.mean(p**2) * n)),
            *shape_features(np.shape(grads[name])),
        ]
        zs.append(np.concatenate([z, frac, loss_feats, np.asarray(state.message, np.float64)]))
        per.append((odd_hat, even, n, name))
    x = np.stack(zs)
    gates = x @ th["lstm"]["wx"] + np.asarray(state.lstm_h, np.float64) @ th["lstm"]["wh"] + th["lstm"]["b"]
    gi, gf, gg, go = np.split(gates, 4, axis=1)
    c = _sig(gf) * np.asarray(state.lstm_c, np.float64) + _sig(gi) * np.tanh(gg)
    h = _sig(go) * np.tanh(c)
    to_mlp = h @ th["to_mlp"]["w"] + th["to_mlp"]["b"]
    factor = np.exp(
        math.log(cfg.tensor_range) * np.tanh(h @ th["to_step"]["w"][:, 0] + th["to_step"]["b"][0])
    )
    eta = cfg.peak * math.exp(cfg.log_step_mult * float(th["log_step"])) * s
    mlp = th["mlp"]
    out = {}
    for i, (odd_hat, even, n, name) in enumerate(per):
        fo = odd_hat.shape[1]
        tensor_in = np.concatenate([frac, [math.log(n), math.log(len(per))]])
        w0 = mlp["l0"]["w"]
        bias = mlp["l0"]["b"] + tensor_in @ w0[fo + even.shape[1] :] + to_mlp[i]

        def f_mlp(xo):
            a = np.maximum(xo @ w0[:fo] + even @ w0[fo : fo + even.shape[1]] + bias, 0)
            j = 1
            while f"l{j}" in mlp:
                a = np.maximum(a @ mlp[f"l{j}"]["w"] + mlp[f"l{j}"]["b"], 0)
                j += 1
            return a @ mlp["out"]["w"][:, 0]

        d = f_mlp(odd_hat) - f_mlp(-odd_hat) + odd_hat @ th["skip"]
        d_hat = d / np.sqrt(np.mean(d**2) + 1e-30)
        out[name] = (-eta * factor[i] * d_hat).reshape(np.shape(grads[name]))
    return out


def test_fused_update_matches_the_float64_reference():
    learned = V2()
    theta = perturbed(learned.init(jax.random.key(0)), scale=0.5)
    params = params_tree()
    state = learned.transform(theta).init(params)
    for t, g in enumerate(grad_seq(5)):
        loss = 1.0 + 0.1 * t
        ref = reference_update(learned, theta, g, state, params, loss, T)
        u, state = _step(theta, g, state, params, jnp.float32(loss), jnp.int32(T))
        for name in ref:
            np.testing.assert_allclose(
                np.asarray(u[name]), ref[name], rtol=2e-4, atol=1e-9, err_msg=f"{t} {name}"
            )


def test_evaluation_tells_it_the_run_length():
    """`evaluate.train_one` passes T = its num_steps to every update: an unbound transform runs, and
    one bound to another length gives the same run (the keyword wins)."""
    from lopt.evaluate import train_one
    from lopt.tasks.registry import get_family

    family = get_family("quadratic", dims=(4,))
    task = family.task(family.sample(jax.random.key(1)))
    learned = V2()
    theta = perturbed(learned.init(jax.random.key(0)), scale=0.1)
    run = jit(lambda opt: train_one(jax.random.key(2), task, opt, 20, eval_every=10)[1], static_argnums=0)
    unbound = run(learned.transform(theta))
    other = run(learned.transform(theta, num_steps=7))
    np.testing.assert_allclose(np.asarray(unbound), np.asarray(other), rtol=1e-6, atol=0)
    assert np.all(np.isfinite(np.asarray(unbound)))


def test_the_unroller_tells_it_each_particles_horizon():
    """Particles of horizon H run exactly as a transform bound to H (the unroller passes num_steps=H)."""
    from lopt.tasks.registry import get_family
    from lopt.unroll import Unroller

    family = get_family("quadratic", dims=(4,))
    static = family.sample_static(jax.random.key(0))
    learned = V2()
    theta = perturbed(learned.init(jax.random.key(0)), scale=0.1)

    class Bound:  # the same architecture, bound to T = 9, ignoring the unroller's num_steps
        def transform(self, th):
            inner = learned.transform(th, num_steps=9)

            def update(g, s, p=None, **extra):
                extra.pop("num_steps")
                return inner.update(g, s, p, **extra)

            return optax.GradientTransformationExtraArgs(inner.init, update)

    outs = []
    for opt in (learned, Bound()):
        unroller = Unroller(opt, family, static, horizon=(9, 9), stagger=False)
        state = unroller.init(theta, 2)
        state, out = jit(lambda k, s: unroller.unroll(k, s, theta, 12))(jax.random.key(3), state)
        outs.append((state.params, out.loss))
    for x, y in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=0)
