"""``python -m lopt.tuning``: build the ordered NAdamW list (`lopt.tuning.nadamw.build_nadamw_list`)."""

import tyro

from lopt.tuning.nadamw import build_nadamw_list

if __name__ == "__main__":
    tyro.cli(build_nadamw_list)
