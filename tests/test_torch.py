"""lopt.torch as a torch optimizer: state_dict round trips (also through Lookahead), param groups,
closures, bad inputs with clear errors, and the JAX side never importing torch."""

import io
import os
import subprocess
import sys
from contextlib import nullcontext

import jax
import numpy as np
import pytest

import lopt
from lopt.optimizers.learned.io import ThetaMismatchError
from lopt.optimizers.learned.registry import LEARNED
from lopt.validate import UnknownNameError

torch = pytest.importorskip("torch")
from test_torch_equivalence import NAMES, NUM_STEPS, run_torch, torch_params  # noqa: E402

import lopt.torch  # noqa: E402

ALL = [("name", n) for n in sorted(lopt.PRETRAINED)] + [("architecture", a) for a in sorted(LEARNED)]


def make(params, how, what, compile=True):
    return lopt.torch.LearnedOptimizer(params, **{how: what}, num_steps=NUM_STEPS, compile=compile)


def saved(opt) -> bytes:
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    return buf.getvalue()


def loaded(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), weights_only=False)


def clone(params) -> list:
    return [p.detach().clone().requires_grad_() for p in params]


@pytest.mark.parametrize("compile", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("how,what", ALL)
def test_state_dict_resumes_identically(how, what, compile):
    params = torch_params()
    opt = make(params, how, what, compile)
    run_torch(opt, params, 0, 60)
    data, at_save = saved(opt), clone(params)
    straight = run_torch(opt, params, 60, 40)
    fresh = make(at_save, how, what, compile)
    fresh.load_state_dict(loaded(data))
    resumed = run_torch(fresh, at_save, 60, 40)
    for k in NAMES:
        np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)


def _big_params() -> list:
    """A tensor in the large size class of the compiled kernels (> 4096 entries), a small one, a scalar."""
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(s, generator=gen).requires_grad_() for s in ((70, 90), (33,), ())]


@pytest.mark.parametrize(
    "how,what", [("name", n) for n in sorted(lopt.PRETRAINED)] + [("architecture", "hierarchical_v2")]
)
def test_compiled_matches_eager_on_large_tensors(how, what):
    runs = []
    for compile in (True, False):
        params = _big_params()
        opt = make(params, how, what, compile)
        for t in range(30):
            for p in params:
                p.grad = torch.sin(p.detach() * (1 + t)) + 0.1 * torch.cos(
                    torch.arange(p.numel()).view(p.shape) * 0.37
                )
            opt.step(loss=1.0 / (1 + t))
        runs.append([p.detach().clone() for p in params])
    start = _big_params()
    for got, eager, p0 in zip(*runs, start):
        assert float((eager - p0.detach()).abs().max()) > 1e-3  # the run moves the params
        torch.testing.assert_close(got, eager, rtol=2e-5, atol=2e-6)


def test_compile_flag_is_checked_and_a_failed_compilation_falls_back(monkeypatch):
    from lopt.torch import kernels

    with pytest.raises(TypeError, match="compile must be True or False"):
        lopt.torch.LearnedOptimizer([torch.nn.Parameter(torch.ones(2))], name="mlp-small-v1", compile="yes")
    eager = _big_params()
    opt = lopt.torch.LearnedOptimizer(eager, name="mlp-small-v1", compile=False)
    broken = _big_params()
    monkeypatch.setattr(kernels.Compiled, "disabled_reason", None)

    def no_compiler(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

    for kernel in kernels.mlp_kernels(*kernels_key("mlp-small-v1")):
        monkeypatch.setattr(kernel, "fn", no_compiler)
    fallback = lopt.torch.LearnedOptimizer(broken, name="mlp-small-v1")
    for t in range(3):
        for ps in (eager, broken):
            for p in ps:
                p.grad = torch.cos(p.detach() * (2 + t))
        opt.step()
        with (
            pytest.warns(RuntimeWarning, match="torch.compile of the learned optimizer's kernels failed")
            if t == 0
            else nullcontext()
        ):
            fallback.step()
    assert "no working C++ compiler" in kernels.Compiled.disabled_reason
    for p, q in zip(broken, eager):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def kernels_key(name: str) -> tuple:
    """The `kernels.mlp_kernels` arguments of a shipped `mlp`/`hierarchical` optimizer."""
    cfg = lopt.load_pretrained(name)[0].config
    return (
        tuple(cfg.spec.mom_decays),
        tuple(cfg.spec.rms_decays),
        len(cfg.hidden) - 1,
        float(cfg.step_mult),
        float(cfg.exp_mult),
    )


@pytest.mark.parametrize("name", sorted(lopt.PRETRAINED))
def test_lookahead_state_dict_resumes_identically(name):
    params = torch_params()
    opt = lopt.torch.Lookahead(make(params, "name", name), k=5, alpha=0.5)
    run_torch(opt, params, 0, 63)  # mid-cycle: the slow weights differ from the fast ones
    data, at_save = saved(opt), clone(params)
    straight = run_torch(opt, params, 63, 37)
    fresh = lopt.torch.Lookahead(make(at_save, "name", name), k=3, alpha=0.9)  # k, α come from the state
    fresh.load_state_dict(loaded(data))
    assert (fresh.k, fresh.alpha, fresh.count) == (5, 0.5, 63)
    resumed = run_torch(fresh, at_save, 63, 37)
    for k in NAMES:
        np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)


def test_lookahead_around_adamw_and_added_group():
    a, b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(3))
    opt = lopt.torch.Lookahead(torch.optim.AdamW([a], lr=0.1), k=2, alpha=0.5)
    for step in range(4):
        if step == 1:
            opt.add_param_group({"params": [b], "lr": 0.1})
        opt.zero_grad()
        (a.sum() + b.sum()).backward()
        opt.step()
    assert len(opt.optimizer.param_groups) == 2 and opt.param_groups is opt.optimizer.param_groups
    assert set(opt.state) == {a, b}
    sd = opt.state_dict()
    assert sorted(sd["lookahead"]["slow"]) == [0, 1]
    a2, b2 = torch.nn.Parameter(a.detach().clone()), torch.nn.Parameter(b.detach().clone())
    inner = torch.optim.AdamW([{"params": [a2], "lr": 0.1}, {"params": [b2], "lr": 0.1}])
    fresh = lopt.torch.Lookahead(inner, k=2, alpha=0.5)
    fresh.load_state_dict(loaded(saved(opt)))
    for p, q in ((a, a2), (b, b2)):
        torch.testing.assert_close(fresh.state[q]["slow"], opt.state[p]["slow"], rtol=0, atol=0)


def test_param_groups_frozen_and_another_theta():
    params = torch_params()
    frozen_before = params[3].detach().clone()
    opt = lopt.torch.LearnedOptimizer(
        [
            {"params": params[:2]},  # the default: mlp-small-v1
            {"params": params[2:3], "name": "hierarchical-small-v1"},
            {"params": params[3:], "frozen": True},
        ],
        name="mlp-small-v1",
    )
    alone_a = clone(params[:2])
    alone_b = clone(params[2:3])
    opt_a = lopt.torch.LearnedOptimizer(alone_a, name="mlp-small-v1")
    opt_b = lopt.torch.LearnedOptimizer(alone_b, name="hierarchical-small-v1")
    for _ in range(5):
        for o, ps in ((opt, params), (opt_a, alone_a), (opt_b, alone_b)):
            for p in ps:
                p.grad = torch.cos(p.detach() * 3.0)
            o.step(loss=1.0)
    torch.testing.assert_close(params[3], frozen_before, rtol=0, atol=0)
    for p, q in zip(params[:3], alone_a + alone_b):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_params_without_grad_are_skipped_and_closure_feeds_the_loss():
    w = torch.nn.Parameter(torch.linspace(-1, 1, 6))
    unused = torch.nn.Parameter(torch.ones(2))
    opt = lopt.torch.LearnedOptimizer([w, unused], name="hierarchical-small-v1")
    twin = torch.nn.Parameter(w.detach().clone())
    twin_opt = lopt.torch.LearnedOptimizer([twin], name="hierarchical-small-v1")

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        loss = opt.step(closure)
        twin_opt.zero_grad()
        (twin**2).sum().backward()
        twin_opt.step(loss=loss.detach())
    assert torch.equal(unused, torch.ones(2)) and unused not in opt.state
    torch.testing.assert_close(w, twin, rtol=0, atol=0)


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(UnknownNameError) as err:
        lopt.torch.LearnedOptimizer([torch.nn.Parameter(torch.ones(2))], name="adam-large-v9")
    for shipped in lopt.PRETRAINED:
        assert shipped in str(err.value)
    with pytest.raises(UnknownNameError, match="architecture='mlp'"):
        lopt.torch.LearnedOptimizer([torch.nn.Parameter(torch.ones(2))], name="mlp")


def test_theta_of_another_architecture_says_what_differs(tmp_path):
    hier = LEARNED["hierarchical"]()
    path = tmp_path / "hier.safetensors"
    lopt.save_theta(path, hier, hier.init(jax.random.key(1)))
    p = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(
        ThetaMismatchError, match="'hierarchical' learned optimizer; it cannot be loaded into 'mlp'"
    ):
        lopt.torch.LearnedOptimizer(p, theta=path, architecture="mlp")
    with pytest.raises(ThetaMismatchError, match="missing arrays .*matches the default 'hierarchical'"):
        lopt.torch.LearnedOptimizer(p, theta=hier.init(jax.random.key(1)), architecture="mlp")
    wide = LEARNED["mlp"](hidden=(8, 8))
    with pytest.raises(ThetaMismatchError, match="config"):
        lopt.torch.LearnedOptimizer(p, theta=lopt.PRETRAINED["mlp-small-v1"].weights_path, architecture=wide)
    opt = lopt.torch.LearnedOptimizer(p, theta=path)  # alone, the file's own architecture
    assert opt._rule(opt.param_groups[0]).learned == hier


@pytest.mark.parametrize("kwargs", [{"lr": 1e-3}, {"weight_decay": 0.1}])
def test_learning_rate_is_refused_with_the_reason(kwargs):
    p = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(ValueError, match="no hyperparameters for the user"):
        lopt.torch.LearnedOptimizer(p, name="mlp-small-v1", **kwargs)
    with pytest.raises(ValueError, match="meta-trained weights"):
        lopt.torch.LearnedOptimizer([{"params": p, **kwargs}], name="mlp-small-v1")


def test_sparse_gradients_are_refused():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = lopt.torch.LearnedOptimizer(emb.parameters(), name="mlp-small-v1")
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse gradients .*sparse=False"):
        opt.step()


@pytest.mark.skipif("hierarchical_v2" not in LEARNED, reason="no horizon-aware architecture in this lopt")
def test_horizon_aware_architecture_needs_num_steps():
    with pytest.raises(ValueError, match="num_steps=T"):
        lopt.torch.LearnedOptimizer([torch.nn.Parameter(torch.ones(2))], architecture="hierarchical_v2")
    with pytest.raises(ValueError, match="int >= 1"):
        lopt.torch.LearnedOptimizer(
            [torch.nn.Parameter(torch.ones(2))], architecture="hierarchical_v2", num_steps=0
        )


def test_state_stays_float32_for_bfloat16_params():
    p = torch.nn.Parameter(torch.full((5,), 0.01, dtype=torch.bfloat16))
    opt = lopt.torch.LearnedOptimizer([p], name="mlp-small-v1")
    p.grad = torch.full((5,), 0.5, dtype=torch.bfloat16)
    opt.step()
    fresh = lopt.torch.LearnedOptimizer([p], name="mlp-small-v1")
    fresh.load_state_dict(loaded(saved(opt)))
    assert fresh.state[p]["mom0"].dtype == torch.float32 and p.dtype == torch.bfloat16
    assert bool((p < 0.01).all())  # moved by ~1e-3 (at 1.0 a bf16 ulp, 2^-7, would swallow it)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    cpu = torch_params()
    gpu = [p.detach().cuda().requires_grad_() for p in cpu]
    for ps in (cpu, gpu):
        opt = lopt.torch.LearnedOptimizer(ps, name="hierarchical-small-v1")
        for t in range(20):
            for p in ps:
                p.grad = torch.sin(p.detach() * (1 + t))
            opt.step(loss=float(t))
    for p, q in zip(cpu, gpu):
        torch.testing.assert_close(p, q.cpu(), rtol=1e-4, atol=1e-5)


def test_lopt_does_not_import_torch():
    code = (
        "import sys, lopt, lopt.optimizers, lopt.pretrained; lopt.pretrained('mlp-small-v1'); "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
