"""`RULES`: learned-architecture name (as in `lopt.LEARNED`) -> its torch `Rule`; the same keys."""

from __future__ import annotations

from lopt.optimizers.learned.registry import LEARNED
from lopt.torch.hierarchical import HierarchicalRule
from lopt.torch.hyper import AdamLRRule, SGDMRule
from lopt.torch.mlp import MLPRule
from lopt.torch.rule import Rule

RULES: dict[str, type[Rule]] = {
    "mlp": MLPRule,
    "hierarchical": HierarchicalRule,
    "adam_lr": AdamLRRule,
    "sgdm": SGDMRule,
}

# The horizon-aware architecture landed in the JAX registry alongside this adapter; its torch rule
# imports its JAX module (constants, config), so it is registered exactly when LEARNED has it.
if "hierarchical_v2" in LEARNED:
    from lopt.torch.hierarchical_v2 import HierarchicalV2Rule

    RULES["hierarchical_v2"] = HierarchicalV2Rule
