"""Moved to `lopt.studies.demo` (`lopt demo`); this name stays an alias of that module."""

import sys

from lopt.studies import demo as _study

sys.modules[__name__] = _study
