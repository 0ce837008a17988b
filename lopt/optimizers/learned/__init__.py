"""Learned optimizers: ``LEARNED[name]()`` -> ``init(key) -> theta``, ``transform(theta) -> optax``."""

from lopt.optimizers.learned.base import LearnedOptimizer as LearnedOptimizer
from lopt.optimizers.learned.base import Theta as Theta
from lopt.optimizers.learned.hierarchical import HierarchicalConfig as HierarchicalConfig
from lopt.optimizers.learned.hierarchical import HierarchicalOptimizer as HierarchicalOptimizer
from lopt.optimizers.learned.hierarchical import HierarchicalState as HierarchicalState
from lopt.optimizers.learned.hierarchical_v2 import HierarchicalV2 as HierarchicalV2
from lopt.optimizers.learned.hierarchical_v2 import HierarchicalV2Config as HierarchicalV2Config
from lopt.optimizers.learned.hyper import SGDM as SGDM
from lopt.optimizers.learned.hyper import AdamLR as AdamLR
from lopt.optimizers.learned.hyper import AdamLRConfig as AdamLRConfig
from lopt.optimizers.learned.hyper import SGDMConfig as SGDMConfig
from lopt.optimizers.learned.io import ThetaMismatchError as ThetaMismatchError
from lopt.optimizers.learned.io import load_theta as load_theta
from lopt.optimizers.learned.io import save_theta as save_theta
from lopt.optimizers.learned.mlp import MLPConfig as MLPConfig
from lopt.optimizers.learned.mlp import MLPOptimizer as MLPOptimizer
from lopt.optimizers.learned.mlp import MLPState as MLPState
from lopt.optimizers.learned.registry import LEARNED as LEARNED
from lopt.optimizers.learned.registry import get_learned as get_learned
