"""Moved to `lopt.studies.generalization` (`lopt study generalization`); this name stays an alias of that module."""

import sys

from lopt.studies import generalization as _study

if (
    __name__ == "__main__"
):  # python -m lopt.generalization [flags]: the same as `lopt study generalization [flags]`
    from lopt.studies import main

    main("generalization", prog="python -m lopt.generalization")
else:
    sys.modules[__name__] = _study
