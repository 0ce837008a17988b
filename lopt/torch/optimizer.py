"""`LearnedOptimizer`: a lopt learned optimizer as a `torch.optim.Optimizer`.

    opt = lopt.torch.LearnedOptimizer(model.parameters(), name="mlp-small-v1")   # no learning rate
    loss = loss_fn(model(x), y); loss.backward()
    opt.step(loss=loss)            # or opt.step(closure); valid_loss= when the loop has one
    opt.zero_grad()

The same architecture and the same safetensors theta as the JAX optimizer, run in torch ops in
float32 (`lopt.torch.RULES`); 200 steps agree with the JAX ones to float32 rounding
(tests/test_torch_equivalence.py). Param groups may each run another optimizer (``name=``,
``theta=``, ``architecture=``) or be ``frozen=True`` (never updated). Params without a gradient
are skipped that step, as torch's own optimizers do. A group's params must be on one device.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from lopt.optimizers.learned.io import ThetaMismatchError
from lopt.torch.registry import RULES
from lopt.torch.rule import Rule
from lopt.torch.theta import resolve, source_of

OPTIONS = ("name", "theta", "architecture")  # which optimizer a group runs (see `lopt.torch.theta`)
HPARAM_NAMES = frozenset(
    {"lr", "learning_rate", "step_size", "momentum", "betas", "b1", "b2", "eps", "weight_decay", "initial_lr"}
)
NO_HPARAMS = (
    "lopt.torch.LearnedOptimizer takes no {what}: a learned optimizer has no hyperparameters for the "
    "user, its step sizes are part of its meta-trained weights (theta). Drop the argument; to change "
    "how it steps, meta-train another theta (lopt meta-train) and pass theta=path. (torch's "
    "lr_scheduler needs an 'lr' and so does not apply.)"
)
GROUP_KEY = "group"  # the per-group state lives in the state of the group's first param under this key


def _refuse_hparams(given: dict, where: str) -> None:
    bad = sorted(set(given) & HPARAM_NAMES)
    if bad:
        what = (
            "learning rate"
            if {"lr", "learning_rate", "step_size"} & set(bad)
            else f"hyperparameters ({', '.join(bad)})"
        )
        raise ValueError(NO_HPARAMS.format(what=what) + f" [{where}: {', '.join(bad)}]")


def _check_num_steps(rule: Rule, num_steps: Any) -> None:
    if num_steps is not None and (
        isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1
    ):
        raise ValueError(f"num_steps={num_steps!r} must be an int >= 1: the length T of the training run.")
    if num_steps is None and getattr(rule.learned, "needs_num_steps", False):
        raise ValueError(
            f"{rule.learned.name} is horizon-aware: it schedules its step over the run, so pass the run's "
            "length, LearnedOptimizer(..., num_steps=T) (or num_steps in the param group)."
        )


def _copy(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, copy=True)
    if isinstance(value, dict):
        return {k: _copy(v, device) for k, v in value.items()}
    return value


class LearnedOptimizer(torch.optim.Optimizer):
    """A lopt learned optimizer (pretrained, or any theta of any `lopt.LEARNED` architecture) in torch.

    Args:
      params: an iterable of tensors, or of param-group dicts (each may set ``name``, ``theta``,
        ``architecture`` and ``frozen``; unset ones take the constructor's).
      name: a shipped pretrained optimizer, one of `lopt.PRETRAINED`.
      theta: a theta file written by `lopt.save_theta` (its architecture is read from it), or a
        nested dict of arrays together with ``architecture``.
      architecture: a name in `lopt.LEARNED` or a lopt `LearnedOptimizer` (JAX side) whose config
        the theta must match; alone, the architecture's initial theta (``init(key(0))``).
      num_steps: the length T of the training run; required by the horizon-aware architectures
        (``hierarchical_v2``), unused by the others (as ``lopt.pretrained(name, num_steps=T)``).
      frozen: never update these params.
      compile: run each tensor's passes as kernels compiled by `torch.compile` (`lopt.torch.kernels`:
        ~3.5x faster than eager at 1e6 entries on CPU, the same results to float32 rounding). The
        first step compiles them (on a busy 2-core CPU 42-91 s with an empty inductor cache, 7-20 s
        once inductor's on-disk cache holds them); a failed compilation warns once and runs the
        eager ops. ``False``: eager only.

    Raises:
      UnknownNameError: ``name`` is not shipped (the message lists those that are).
      ThetaMismatchError: the theta does not fit the architecture (the message says what differs).
      ValueError: a learning rate or another hyperparameter is passed; sparse gradients at ``step``.
    """

    def __init__(
        self,
        params,
        name: str | None = None,
        *,
        theta: Any = None,
        architecture: Any = None,
        num_steps: int | None = None,
        frozen: bool = False,
        compile: bool = True,
        **kwargs: Any,
    ):
        _refuse_hparams(kwargs, "LearnedOptimizer(...)")
        if kwargs:
            raise TypeError(
                f"LearnedOptimizer got unexpected arguments {sorted(kwargs)}; it takes name=, theta=, "
                "architecture=, num_steps= and frozen= (and no learning rate)."
            )
        if not isinstance(compile, bool):
            raise TypeError(f"compile must be True or False, got {compile!r}.")
        self._rules: dict[tuple, Rule] = {}
        self.compile = compile
        defaults = {
            "name": name,
            "theta": theta,
            "architecture": architecture,
            "num_steps": num_steps,
            "frozen": frozen,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group; it runs the optimizer its options name (checked now, so errors come early)."""
        _refuse_hparams(param_group, "param group")
        if any(
            k in param_group for k in OPTIONS
        ):  # a group that names its optimizer takes none of the defaults'
            param_group = {**{k: None for k in OPTIONS}, **param_group}
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            if p.is_complex():
                raise ValueError(
                    f"lopt learned optimizers are real-valued; got a complex param of shape {tuple(p.shape)}."
                )
        rule = self._rule(group)
        _check_num_steps(rule, group["num_steps"])

    def _rule(self, group: dict) -> Rule:
        key = source_of(group["name"], group["theta"], group["architecture"])
        if key not in self._rules:
            learned, theta = resolve(group["name"], group["theta"], group["architecture"])
            self._rules[key] = RULES[learned.name](learned, theta, compile=self.compile)
        return self._rules[key]

    def _group_state(self, group: dict, rule: Rule) -> dict:
        holder = self.state[group["params"][0]]
        if GROUP_KEY not in holder:
            holder[GROUP_KEY] = {
                "architecture": rule.architecture,
                **rule.init_group(group["params"][0].device),
            }
        return holder[GROUP_KEY]

    @torch.no_grad()
    def step(self, closure=None, *, loss: Any = None, valid_loss: Any = None):
        """One step of every group with gradients; ``loss`` (or the closure's) and ``valid_loss`` feed
        the architectures that read them (`hierarchical`); returns the loss."""
        if closure is not None:
            if loss is not None:
                raise ValueError("pass either a closure or loss=, not both: the closure's value is the loss.")
            with torch.enable_grad():
                loss = closure()
        work = []
        for gi, group in enumerate(self.param_groups):
            if group["frozen"]:
                continue
            rule = self._rule(group)
            params, grads, states = [], [], []
            for index, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.layout != torch.strided:
                    raise ValueError(
                        f"lopt learned optimizers do not support sparse gradients (group {gi}, param {index}, "
                        f"shape {tuple(p.shape)}, layout {p.grad.layout}): their features are normalized over "
                        "the whole tensor, so every entry moves each step. Use dense gradients, e.g. "
                        "nn.Embedding(..., sparse=False)."
                    )
                state = self.state[p]
                if not state.keys() - {GROUP_KEY}:
                    state.update(rule.init_param(p, index))
                params.append(p)
                grads.append(p.grad)
                states.append(state)
            if params:
                work.append((rule, group, params, grads, states))
        for rule, group, params, grads, states in work:
            gs = self._group_state(group, rule)
            rule.step(
                params, grads, states, gs, loss=loss, valid_loss=valid_loss, num_steps=group["num_steps"]
            )
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a `state_dict`: the groups' options and every state tensor (copied, float32 kept)."""
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            state_dict = hook(self, state_dict) or state_dict
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(
                f"the state_dict has {len(saved)} param groups, this optimizer {len(self.param_groups)}."
            )
        for i, (group, s) in enumerate(zip(self.param_groups, saved)):
            if len(group["params"]) != len(s["params"]):
                raise ValueError(
                    f"param group {i} has {len(group['params'])} params, the state_dict's {len(s['params'])}."
                )
        id_map = {
            k: p for group, s in zip(self.param_groups, saved) for k, p in zip(s["params"], group["params"])
        }
        state: defaultdict = defaultdict(dict)
        for k, value in state_dict["state"].items():
            if k not in id_map:
                raise ValueError(f"the state_dict has state for param {k!r}, which is in none of its groups.")
            state[id_map[k]] = _copy(value, id_map[k].device)
        for group, s in zip(self.param_groups, saved):
            group.update({k: v for k, v in s.items() if k != "params"})
        for i, group in enumerate(self.param_groups):
            rule, gs = self._rule(group), state.get(group["params"][0], {}).get(GROUP_KEY)
            if gs is not None and gs["architecture"] != rule.architecture:
                raise ThetaMismatchError(
                    f"param group {i}'s state was computed by {gs['architecture']}, but its options now resolve "
                    f"to {rule.architecture}: the theta file changed since the state was saved."
                )
        self.state = state
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)
