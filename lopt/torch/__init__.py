"""lopt in PyTorch: learned optimizers and Lookahead as `torch.optim.Optimizer`s (``pip install lopt[torch]``).

    import lopt.torch
    opt = lopt.torch.LearnedOptimizer(model.parameters(), name="hierarchical-small-v1")
    opt = lopt.torch.Lookahead(opt, k=5, alpha=0.5)

Nothing outside this package imports torch.
"""

from lopt.torch.lookahead import Lookahead as Lookahead
from lopt.torch.optimizer import LearnedOptimizer as LearnedOptimizer
from lopt.torch.registry import RULES as RULES
from lopt.torch.rule import Rule as Rule
