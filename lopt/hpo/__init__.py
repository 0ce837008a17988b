"""Bilevel hyperparameter optimization of optax baselines: hypergradients of a validation loss by
full unrolls (`unrolled`), truncated online unrolls (`truncated`), the implicit function theorem
(`implicit`) and the meta-training engine's ES / PES / NRES (`es`); `HParamSpace` maps a
baseline's hyperparameters to an unconstrained (log-space) theta."""

from lopt.hpo.implicit import cg_solve as cg_solve
from lopt.hpo.implicit import check_ift_hparams as check_ift_hparams
from lopt.hpo.implicit import ift_hypergrad as ift_hypergrad
from lopt.hpo.implicit import ift_hypergrad_task as ift_hypergrad_task
from lopt.hpo.implicit import neumann_solve as neumann_solve
from lopt.hpo.space import HParamOptimizer as HParamOptimizer
from lopt.hpo.space import HParamSpace as HParamSpace
from lopt.hpo.truncated import OnlineTrace as OnlineTrace
from lopt.hpo.truncated import online_tune as online_tune
from lopt.hpo.truncated import truncated_hypergrad as truncated_hypergrad
from lopt.hpo.unrolled import InnerState as InnerState
from lopt.hpo.unrolled import inner_init as inner_init
from lopt.hpo.unrolled import inner_steps as inner_steps
from lopt.hpo.unrolled import unrolled_hypergrad as unrolled_hypergrad
from lopt.hpo.unrolled import unrolled_loss as unrolled_loss
