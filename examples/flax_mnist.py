"""A Flax (nnx) MLP on Fashion-MNIST, trained by the shipped learned optimizer or by Adam.

The training loop is a plain Flax/optax loop; swapping Adam for the pretrained learned optimizer
changes one line, the one that builds ``tx``. ``--optimizer adam`` runs the same loop with Adam:

    python examples/flax_mnist.py                      # lopt.pretrained("hierarchical-small-v2", num_steps=steps)
    python examples/flax_mnist.py --optimizer adam     # optax.adam(1e-3)

Fashion-MNIST is held out from the learned optimizer's meta-training (README, "suites"); it comes
from lopt's offline data cache (``lopt data fetch fashion_mnist``).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import lopt
from lopt.data import load


class MLP(nnx.Module):
    """784 -> 128 -> 128 -> 10 with ReLU: logits of the 10 classes."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden1 = nnx.Linear(28 * 28, 128, rngs=rngs)
        self.hidden2 = nnx.Linear(128, 128, rngs=rngs)
        self.out = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = images.reshape(images.shape[0], -1)  # (B, 784)
        x = nnx.relu(self.hidden1(x))  # (B, 128)
        x = nnx.relu(self.hidden2(x))  # (B, 128)
        return self.out(x)  # (B, 10)


def loss_fn(model: MLP, images: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of a batch."""
    return optax.softmax_cross_entropy_with_integer_labels(model(images), labels).mean()


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, images: jax.Array, labels: jax.Array) -> jax.Array:
    """One optimizer step on a batch, in place on ``model`` and ``optimizer``; returns the batch loss."""
    loss, grads = nnx.value_and_grad(loss_fn)(model, images, labels)
    optimizer.update(model, grads, loss=loss)  # loss= feeds the learned optimizer; Adam ignores it
    return loss


@nnx.jit
def accuracy(model: MLP, images: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of ``images`` whose arg-max logit is the label."""
    return jnp.mean(jnp.argmax(model(images), axis=-1) == labels)


def main(steps: int = 1000, optimizer_name: str = "pretrained", batch_size: int = 128, seed: int = 0) -> dict:
    """Train for ``steps`` steps of ``batch_size`` examples; ``optimizer_name`` is "pretrained" or "adam".

    Returns:
      ``{"losses": per-step batch losses, "train_loss": mean of the last 10 % of them,
      "test_accuracy": on the 10,000 test images}``.
    """
    data = load("fashion_mnist").splits
    train_x = jnp.asarray(data["train"]["x"], jnp.float32) / 255.0  # (50000, 28, 28) in [0, 1]
    train_y = jnp.asarray(data["train"]["y"])  # (50000,)
    test_x = jnp.asarray(data["test"]["x"], jnp.float32) / 255.0  # (10000, 28, 28)
    test_y = jnp.asarray(data["test"]["y"])  # (10000,)

    key_init, key_data = jax.random.split(jax.random.key(seed))
    model = MLP(nnx.Rngs(key_init))
    tx = (
        lopt.pretrained("hierarchical-small-v2", num_steps=steps)
        if optimizer_name == "pretrained"
        else optax.adam(1e-3)
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    losses, window = [], max(steps // 10, 1)  # report the mean training loss of every `window` steps
    for step in range(steps):
        batch = jax.random.randint(jax.random.fold_in(key_data, step), (batch_size,), 0, len(train_y))
        losses.append(float(train_step(model, optimizer, train_x[batch], train_y[batch])))
        if (step + 1) % window == 0:
            print(f"step {step + 1:5d}  train loss {sum(losses[-window:]) / window:.4f}")

    train_loss, test_accuracy = sum(losses[-window:]) / window, float(accuracy(model, test_x, test_y))
    print(
        f"{optimizer_name}: train loss {train_loss:.4f} (last {window} steps), "
        f"test accuracy {test_accuracy:.4f}"
    )
    return {"losses": losses, "train_loss": train_loss, "test_accuracy": test_accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps (batches of 128)")
    parser.add_argument("--optimizer", choices=("pretrained", "adam"), default="pretrained")
    args = parser.parse_args()
    main(args.steps, args.optimizer)
