"""Moved to `lopt.studies.selection` (`lopt study selection`); this name stays an alias of that module."""

import sys

from lopt.studies import selection as _study

if __name__ == "__main__":  # python -m lopt.selection [flags]: the same as `lopt study selection [flags]`
    from lopt.studies import main

    main("selection", prog="python -m lopt.selection")
else:
    sys.modules[__name__] = _study
