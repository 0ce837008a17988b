"""Small test helpers shared by the test modules."""

import ast

import jax
import numpy as np


def assert_trees_close(a, b, rtol=1e-6, atol=1e-6):
    """Assert two pytrees have the same structure and allclose leaves."""
    sa, sb = jax.tree.structure(a), jax.tree.structure(b)
    assert sa == sb, f"tree structures differ: {sa} vs {sb}"
    for i, (x, y) in enumerate(zip(jax.tree.leaves(a), jax.tree.leaves(b))):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, f"leaf {i}: shapes {x.shape} vs {y.shape}"
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"leaf {i}")


def optimizer_choice(source: str) -> ast.Assign:
    """An example script's one ``target = PRETRAINED if optimizer_name == "pretrained" else BASELINE``
    statement (on one line or wrapped by ruff format)."""
    found = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.IfExp)
        and ast.unparse(node.value.test) == "optimizer_name == 'pretrained'"
    ]
    assert len(found) == 1, f"expected one optimizer-choice statement, found {len(found)}"
    return found[0]
