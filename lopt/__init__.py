"""lopt: learned optimizers meta-trained by bilevel optimization, measured against tuned baselines.

The public API, re-exported from the subpackages (docs/design.md, habit 9): both halves, using
learned optimizers (optimizers, tasks, evaluation, pretrained weights) and meta-training them
(`meta_train`, `MetaTrainConfig`, `MetaTrainer`, `ESTIMATORS`, `Unroller`), and `hpo`.
"""

from lopt import hpo as hpo
from lopt.config import MetaTrainConfig as MetaTrainConfig
from lopt.estimators import ESTIMATORS as ESTIMATORS
from lopt.evaluate import Curves as Curves
from lopt.evaluate import evaluate as evaluate
from lopt.evaluate import evaluate_hparams as evaluate_hparams
from lopt.evaluate import evaluate_learned as evaluate_learned
from lopt.meta_train import MetaTrainer as MetaTrainer
from lopt.meta_train import meta_train as meta_train
from lopt.optimizers import BASELINES as BASELINES
from lopt.optimizers import LEARNED as LEARNED
from lopt.optimizers import LearnedOptimizer as LearnedOptimizer
from lopt.optimizers import get_baseline as get_baseline
from lopt.optimizers import get_learned as get_learned
from lopt.optimizers import load_theta as load_theta
from lopt.optimizers import lookahead as lookahead
from lopt.optimizers import save_theta as save_theta
from lopt.pretrained import PRETRAINED as PRETRAINED
from lopt.pretrained import load_pretrained as load_pretrained
from lopt.pretrained import model_card as model_card
from lopt.pretrained import pretrained as pretrained
from lopt.tasks import SPLITS as SPLITS
from lopt.tasks import Task as Task
from lopt.tasks import TaskConfig as TaskConfig
from lopt.tasks import TaskFamily as TaskFamily
from lopt.tasks.registry import TASKS as TASKS
from lopt.tasks.registry import get_family as get_family
from lopt.tasks.suites import SUITES as SUITES
from lopt.tasks.suites import get_suite as get_suite
from lopt.unroll import Unroller as Unroller

__version__ = "0.1.0"
