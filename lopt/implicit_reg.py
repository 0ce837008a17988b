"""Moved to `lopt.studies.implicit_reg` (`lopt study implicit_reg`); this name stays an alias of that module."""

import sys

from lopt.studies import implicit_reg as _study

if (
    __name__ == "__main__"
):  # python -m lopt.implicit_reg [flags]: the same as `lopt study implicit_reg [flags]`
    from lopt.studies import main

    main("implicit_reg", prog="python -m lopt.implicit_reg")
else:
    sys.modules[__name__] = _study
