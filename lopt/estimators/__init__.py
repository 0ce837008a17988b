"""Meta-gradient estimators over truncated unrolls: ``init(key, theta, hparams) -> state``,
``estimate(key, theta, state, hparams) -> (meta_grad, state, metrics)``; registry `ESTIMATORS`."""

from lopt.estimators._online import OnlineESState as OnlineESState
from lopt.estimators.base import GradientEstimator as GradientEstimator
from lopt.estimators.es import ES as ES
from lopt.estimators.es import ESState as ESState
from lopt.estimators.nres import NRES as NRES
from lopt.estimators.pes import PES as PES
from lopt.estimators.registry import ESTIMATORS as ESTIMATORS
from lopt.estimators.registry import get_estimator as get_estimator
from lopt.estimators.tbptt import TBPTT as TBPTT
from lopt.estimators.tbptt import TBPTTState as TBPTTState
