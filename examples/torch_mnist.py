"""A PyTorch MLP on MNIST, trained by the shipped learned optimizer or by AdamW.

The training loop is a plain PyTorch loop; swapping AdamW for the pretrained learned optimizer
changes one line, the one that builds ``optimizer``. ``--optimizer adamw`` runs the same loop with
``torch.optim.AdamW(lr=1e-3)``:

    python examples/torch_mnist.py                   # lopt.torch.LearnedOptimizer(name="hierarchical-small-v2", ...)
    python examples/torch_mnist.py --optimizer adamw     # torch.optim.AdamW(..., lr=1e-3)

``optimizer.step(closure)`` is torch's own protocol: AdamW calls the closure for the gradients, the
learned optimizer also reads the loss it returns (a feature of its per-tensor LSTM). MNIST comes
from lopt's offline data cache (``lopt data fetch mnist``); needs ``pip install -e '.[torch]'``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

import lopt.torch
from lopt.data import load


def mlp() -> nn.Module:
    """784 -> 128 -> 128 -> 10 with ReLU: logits of the 10 classes."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(28 * 28, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )


def main(steps: int = 1000, optimizer_name: str = "pretrained", batch_size: int = 128, seed: int = 0) -> dict:
    """Train for ``steps`` steps of ``batch_size`` examples; ``optimizer_name`` is "pretrained" or "adamw".

    Returns:
      ``{"losses": per-step batch losses, "train_loss": mean of the last 10 % of them,
      "test_accuracy": on the 10,000 test images}``.
    """
    data = load("mnist").splits
    train_x = torch.from_numpy(data["train"]["x"].astype(np.float32) / 255.0)  # (50000, 28, 28) in [0, 1]
    train_y = torch.from_numpy(data["train"]["y"].astype(np.int64))  # (50000,)
    test_x = torch.from_numpy(data["test"]["x"].astype(np.float32) / 255.0)  # (10000, 28, 28)
    test_y = torch.from_numpy(data["test"]["y"].astype(np.int64))  # (10000,)

    torch.manual_seed(seed)
    model = mlp()
    batches = torch.Generator().manual_seed(seed + 1)
    optimizer = (
        lopt.torch.LearnedOptimizer(model.parameters(), name="hierarchical-small-v2", num_steps=steps)
        if optimizer_name == "pretrained"
        else torch.optim.AdamW(model.parameters(), lr=1e-3)
    )

    losses, window = [], max(steps // 10, 1)  # report the mean training loss of every `window` steps
    for step in range(steps):
        batch = torch.randint(0, len(train_y), (batch_size,), generator=batches)
        images, labels = train_x[batch], train_y[batch]

        def closure():
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            return loss

        losses.append(optimizer.step(closure).item())  # both return the closure's loss
        if (step + 1) % window == 0:
            print(f"step {step + 1:5d}  train loss {sum(losses[-window:]) / window:.4f}")

    with torch.no_grad():
        test_accuracy = float((model(test_x).argmax(dim=-1) == test_y).float().mean())
    train_loss = sum(losses[-window:]) / window
    print(
        f"{optimizer_name}: train loss {train_loss:.4f} (last {window} steps), test accuracy {test_accuracy:.4f}"
    )
    return {"losses": losses, "train_loss": train_loss, "test_accuracy": test_accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps (batches of 128)")
    parser.add_argument("--optimizer", choices=("pretrained", "adamw"), default="pretrained")
    args = parser.parse_args()
    main(args.steps, args.optimizer)
