"""The validation protocol: fixed tasks from the meta-training distribution, stored Adam
references, and a score, on which meta-training keeps its best theta and `lopt.selection`
chooses what to ship. The held-out ``test`` suite and test splits never enter it.

    validator = Validator(get_validation_suite("valid"), learned)
    metrics = validator(theta)   # valid/score (lower is better; 0 = per-task-tuned Adam), wins, ...
"""

from lopt.validation.references import references
from lopt.validation.suite import VALIDATION_SUITES, ValidationSuite, get_validation_suite
from lopt.validation.validator import Validator, normalized, score

__all__ = [
    "VALIDATION_SUITES",
    "ValidationSuite",
    "Validator",
    "get_validation_suite",
    "normalized",
    "references",
    "score",
]
