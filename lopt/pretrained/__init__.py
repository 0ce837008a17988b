"""Pretrained learned optimizers shipped inside the package: weights (safetensors) and model cards.

    optimizer = lopt.pretrained("mlp-small-v1")        # an optax transformation; no learning rate
    state = optimizer.init(params)
    updates, state = optimizer.update(grads, state, params, loss=loss)   # loss= is optional
    params = optax.apply_updates(params, updates)

    learned, theta = lopt.load_pretrained("mlp-small-v1")   # the architecture and its weights
    print(lopt.model_card("mlp-small-v1"))                  # what it is, how it was trained, results

A pretrained optimizer has no hyperparameters for the user: its step sizes are part of its
meta-trained weights. Passing one (``learning_rate=...``) is an error that says so. `PRETRAINED`
lists only optimizers whose weights are in the package: each entry was produced by the command in
its model card, and the card's results by the commands written next to them.
"""

from __future__ import annotations

import dataclasses
import os

import optax

from lopt.optimizers.learned.base import LearnedOptimizer, Theta
from lopt.optimizers.learned.io import load_theta
from lopt.validate import check_range, unknown_name

_HERE = os.path.dirname(__file__)


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """One shipped optimizer: ``<name>.safetensors`` (`save_theta` format) and ``<name>.md``."""

    name: str
    summary: str  # one line for listings

    @property
    def weights_path(self) -> str:
        return os.path.join(_HERE, f"{self.name}.safetensors")

    @property
    def card_path(self) -> str:
        return os.path.join(_HERE, f"{self.name}.md")


PRETRAINED: dict[str, Pretrained] = {
    p.name: p
    for p in (
        Pretrained(
            "hierarchical-small-v2",
            "hierarchical_v2 (horizon-aware: pass num_steps=T; normalized, gradient-odd update times a learned "
            "peak step and warmup/cosine shape), 1200 PES steps on train_nn with task reparametrization, "
            "chosen on the validation suite; 9,535 weights",
        ),
        Pretrained(
            "hierarchical-small-v1",
            "Metz et al. 2020 hierarchical (LSTM 32 + MLP 4-4) with a learned log step, 150 PES steps on "
            "train_nn, selected on train_nn tasks; 9,456 weights",
        ),
        Pretrained(
            "mlp-small-v1",
            "per-parameter MLP (hidden 4-4), 100 PES steps on the train_nn suite from Adam-like init; 123 weights",
        ),
    )
}

_NO_HPARAMS = (
    "lopt.pretrained({name!r}) takes no {what}: a pretrained learned optimizer has no hyperparameters "
    "for the user, its step sizes are part of its meta-trained weights. Call lopt.pretrained({name!r}) "
    "alone; to scale its updates anyway, chain it: optax.chain(lopt.pretrained({name!r}), optax.scale(c))."
)
_HPARAM_NAMES = {"learning_rate", "lr", "step_size", "b1", "b2", "eps", "weight_decay", "momentum"}


def _entry(name: str) -> Pretrained:
    if name not in PRETRAINED:
        raise unknown_name("pretrained optimizer", name, PRETRAINED)
    return PRETRAINED[name]


def load_pretrained(name: str) -> tuple[LearnedOptimizer, Theta]:
    """(learned optimizer, theta) of a shipped optimizer; an unknown name lists the available ones."""
    return load_theta(_entry(name).weights_path)


def pretrained(
    name: str, *args, num_steps: int | None = None, **kwargs
) -> optax.GradientTransformationExtraArgs:
    """The shipped optimizer ``name`` as an optax transformation (``update`` accepts the keyword-only
    extras ``loss=`` and ``valid_loss=``; without them it runs on gradients alone).

    ``num_steps`` is the length T of the training run: required by the horizon-aware (v2)
    architectures, which schedule their step over it; the v1 architectures do not use it.

    Raises:
      UnknownNameError: ``name`` is not shipped (the message lists the names that are).
      TypeError: any other argument, e.g. a learning rate (it has none).
    """
    entry = _entry(name)
    if args or kwargs:
        given = sorted(kwargs) or [repr(a) for a in args]
        what = "learning rate" if _HPARAM_NAMES & set(kwargs) or args else f"arguments ({', '.join(given)})"
        raise TypeError(_NO_HPARAMS.format(name=entry.name, what=what))
    learned, theta = load_pretrained(name)
    if getattr(learned, "needs_num_steps", False):
        if num_steps is None:
            raise TypeError(
                f"{entry.name} is horizon-aware: pass the length of the training run, "
                f"lopt.pretrained({entry.name!r}, num_steps=T)."
            )
        check_range("num_steps", num_steps, 1, 2**31 - 1)
        return optax.with_extra_args_support(learned.transform(theta, num_steps=int(num_steps)))
    return optax.with_extra_args_support(learned.transform(theta))


def model_card(name: str) -> str:
    """The model card (Markdown) of a shipped optimizer."""
    with open(_entry(name).card_path, encoding="utf-8") as f:
        return f.read()
