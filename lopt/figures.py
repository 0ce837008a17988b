"""Moved to `lopt.report.figures`; this name stays an alias of that module."""

import sys

from lopt.report import figures as _figures

sys.modules[__name__] = _figures
