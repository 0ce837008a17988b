"""Task distribution: `Task` / `TaskFamily` contracts, the families, the `TASKS` registry, suites."""

from lopt.tasks.base import SPLITS as SPLITS
from lopt.tasks.base import Task as Task
from lopt.tasks.base import TaskConfig as TaskConfig
from lopt.tasks.base import TaskFamily as TaskFamily
from lopt.tasks.base import sample_group as sample_group
from lopt.tasks.base import stack_tasks as stack_tasks
from lopt.tasks.base import task_axes as task_axes
from lopt.tasks.registry import TASKS as TASKS
from lopt.tasks.registry import get_family as get_family
from lopt.tasks.suites import SUITES as SUITES
from lopt.tasks.suites import Suite as Suite
from lopt.tasks.suites import get_suite as get_suite
