"""`RULES`: learned-architecture name (as in `lopt.LEARNED`) -> its torch `Rule`."""

from __future__ import annotations

from lopt.torch.hierarchical import HierarchicalRule
from lopt.torch.hierarchical_v2 import HierarchicalV2Rule
from lopt.torch.hyper import AdamLRRule, SGDMRule
from lopt.torch.mlp import MLPRule
from lopt.torch.rule import Rule

RULES: dict[str, type[Rule]] = {
    "mlp": MLPRule,
    "hierarchical": HierarchicalRule,
    "hierarchical_v2": HierarchicalV2Rule,
    "adam_lr": AdamLRRule,
    "sgdm": SGDMRule,
}
