"""Moved to `lopt.studies.self_training` (`lopt study self_training`); this name stays an alias of that module."""

import sys

from lopt.studies import self_training as _study

if (
    __name__ == "__main__"
):  # python -m lopt.self_training [flags]: the same as `lopt study self_training [flags]`
    from lopt.studies import main

    main("self_training", prog="python -m lopt.self_training")
else:
    sys.modules[__name__] = _study
