"""An Equinox MLP on Fashion-MNIST, trained by the shipped learned optimizer or by Adam.

The training loop is a plain Equinox/optax loop; swapping Adam for the pretrained learned optimizer
changes one line, the one that builds ``tx``. ``--optimizer adam`` runs the same loop with Adam:

    python examples/equinox_mnist.py                      # lopt.pretrained("hierarchical-small-v2", num_steps=steps)
    python examples/equinox_mnist.py --optimizer adam     # optax.adam(1e-3)

Fashion-MNIST is held out from the learned optimizer's meta-training (README, "suites"); it comes
from lopt's offline data cache (``lopt data fetch fashion_mnist``).
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import lopt
from lopt.data import load


def loss_fn(model: eqx.nn.MLP, images: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of a batch."""
    logits = jax.vmap(model)(images.reshape(images.shape[0], -1))  # (B, 10)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@eqx.filter_jit
def accuracy(model: eqx.nn.MLP, images: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of ``images`` whose arg-max logit is the label."""
    logits = jax.vmap(model)(images.reshape(images.shape[0], -1))  # (N, 10)
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


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
    model = eqx.nn.MLP(28 * 28, 10, width_size=128, depth=2, activation=jax.nn.relu, key=key_init)
    tx = (
        lopt.pretrained("hierarchical-small-v2", num_steps=steps)
        if optimizer_name == "pretrained"
        else optax.adam(1e-3)
    )
    opt_state = tx.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def train_step(model, opt_state, images, labels):
        """One optimizer step on a batch: the new model and optimizer state, and the batch loss."""
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, images, labels)
        params = eqx.filter(model, eqx.is_array)
        updates, opt_state = tx.update(grads, opt_state, params, loss=loss)  # Adam ignores loss=
        return eqx.apply_updates(model, updates), opt_state, loss

    losses, window = [], max(steps // 10, 1)  # report the mean training loss of every `window` steps
    for step in range(steps):
        batch = jax.random.randint(jax.random.fold_in(key_data, step), (batch_size,), 0, len(train_y))
        model, opt_state, loss = train_step(model, opt_state, train_x[batch], train_y[batch])
        losses.append(float(loss))
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
