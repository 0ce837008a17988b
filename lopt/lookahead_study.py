"""Moved to `lopt.studies.lookahead` (`lopt study lookahead`); this name stays an alias of that module."""

import sys

from lopt.studies import lookahead as _study

sys.modules[__name__] = _study
