"""Optimizers: hand-designed baselines (`BASELINES`) and the `lookahead` wrapper, all optax transforms."""

from lopt.optimizers.baselines import BASELINES as BASELINES
from lopt.optimizers.baselines import Baseline as Baseline
from lopt.optimizers.baselines import adam8p as adam8p
from lopt.optimizers.baselines import get_baseline as get_baseline
from lopt.optimizers.lookahead import LookaheadState as LookaheadState
from lopt.optimizers.lookahead import lookahead as lookahead
