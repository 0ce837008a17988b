"""Optimizers, all optax transforms: hand-designed `BASELINES`, learned optimizers (`LEARNED`), `lookahead`."""

from lopt.optimizers.baselines import BASELINES as BASELINES
from lopt.optimizers.baselines import Baseline as Baseline
from lopt.optimizers.baselines import adam8p as adam8p
from lopt.optimizers.baselines import get_baseline as get_baseline
from lopt.optimizers.learned import LEARNED as LEARNED
from lopt.optimizers.learned import LearnedOptimizer as LearnedOptimizer
from lopt.optimizers.learned import ThetaMismatchError as ThetaMismatchError
from lopt.optimizers.learned import get_learned as get_learned
from lopt.optimizers.learned import load_theta as load_theta
from lopt.optimizers.learned import save_theta as save_theta
from lopt.optimizers.lookahead import LookaheadState as LookaheadState
from lopt.optimizers.lookahead import lookahead as lookahead
