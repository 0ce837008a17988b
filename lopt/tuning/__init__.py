"""Tuned hand-designed baselines: searches, per-task normalization, global / per-task selection, cache.

    search = lr_search("adam")                                      # AdamLR: 15 log-spaced rates
    res = run_search(task, search, num_steps=1000, num_seeds=3, eval_every=100, cache="runs/cache")
    i = select_per_task(score(res, "outer_valid"), failed(res))     # best trial on this task

Vocabulary. A **search** is one optimizer constructor ``make(hparams)`` with C **trials**: a
pytree of hparams whose leaves share a leading axis C. A search runs on a task as one compiled
program (`lopt.evaluate.evaluate_hparams`: trials × seeds vmapped, common random numbers), and its
result is cached on disk. A **method** turns a search into one optimizer per task:

- ``per_task``: the trial with the lowest final outer-valid loss on that task (best of C trials);
- ``global``: the one trial with the lowest mean normalized outer-valid loss over all the tasks of
  the suite (the setting you would ship without tuning);
- ``fixed``: a single trial, no selection (a default setting, or a learned optimizer).

``trials=N`` makes a method use only the first N trials of its search, so "the first N entries of
the ordered NAdamW list" is a prefix of one cached run. The list (``lopt/tuning/nadamw_list.json``) is
built on the *train* suite only by ``python -m lopt.tuning`` (`lopt.tuning.nadamw.build_nadamw_list`); the file
records the command, the budget and the tasks it was built on.

Scores. The score of a trial on a task and split is its final loss (at step N), median over
seeds (robust to one unlucky seed; with 3 seeds, the middle one). A trial has **failed** when any
seed diverged (non-finite training loss at some step) or its final outer-valid or test loss is not
finite; a failed trial is never selected (`select_per_task`, `select_global`). Selection reads
``outer_valid``; reports read ``test``.

Normalization (per task and split): with L the score, L_best the best score of any non-failed
trial of any search on that task (`best_scores`), and L_init the loss at initialization (step 0,
median over seeds; identical for every trial, as all runs share their seeds),

    n = clip((L − L_best) / (L_init − L_best), 0, CLIP),   a failed trial: n = CLIP.

n = 0 is the best run seen on the task, n = 1 is no progress from the initialization, CLIP means
"as bad as diverged". The denominator is a loss *difference*, so negative losses (flows, a saddle)
are fine; when no run improved on the initialization it is floored at a tiny positive value.
"""

from lopt.optimizers.baselines import NADAMW_KEYS as NADAMW_KEYS
from lopt.optimizers.baselines import nadamw_cosine as nadamw_cosine
from lopt.optimizers.baselines import nadamw_schedule as nadamw_schedule
from lopt.tuning.cache import CACHE_VERSION as CACHE_VERSION
from lopt.tuning.cache import SearchResult as SearchResult
from lopt.tuning.cache import compile_search as compile_search
from lopt.tuning.cache import default_cache_dir as default_cache_dir
from lopt.tuning.cache import is_cached as is_cached
from lopt.tuning.cache import run_key as run_key
from lopt.tuning.cache import run_search as run_search
from lopt.tuning.cache import task_fingerprint as task_fingerprint
from lopt.tuning.methods import DEFAULT_METHODS as DEFAULT_METHODS
from lopt.tuning.methods import METHODS as METHODS
from lopt.tuning.methods import SELECTIONS as SELECTIONS
from lopt.tuning.methods import Budget as Budget
from lopt.tuning.methods import Method as Method
from lopt.tuning.methods import get_method as get_method
from lopt.tuning.methods import learned_method as learned_method
from lopt.tuning.nadamw import NADAMW_LIST_PATH as NADAMW_LIST_PATH
from lopt.tuning.nadamw import NADAMW_SPACE as NADAMW_SPACE
from lopt.tuning.nadamw import build_nadamw_list as build_nadamw_list
from lopt.tuning.nadamw import greedy_order as greedy_order
from lopt.tuning.nadamw import load_nadamw_list as load_nadamw_list
from lopt.tuning.nadamw import nadamw_list_search as nadamw_list_search
from lopt.tuning.nadamw import sample_nadamw as sample_nadamw
from lopt.tuning.scoring import CLIP as CLIP
from lopt.tuning.scoring import best_scores as best_scores
from lopt.tuning.scoring import failed as failed
from lopt.tuning.scoring import init_loss as init_loss
from lopt.tuning.scoring import normalize as normalize
from lopt.tuning.scoring import score as score
from lopt.tuning.scoring import select_global as select_global
from lopt.tuning.scoring import select_per_task as select_per_task
from lopt.tuning.searches import ADAM8P_SPACE as ADAM8P_SPACE
from lopt.tuning.searches import ADAM_LR_GRID as ADAM_LR_GRID
from lopt.tuning.searches import TASKSET_STEPS as TASKSET_STEPS
from lopt.tuning.searches import BaselineMaker as BaselineMaker
from lopt.tuning.searches import Search as Search
from lopt.tuning.searches import adam8p_search as adam8p_search
from lopt.tuning.searches import fixed_search as fixed_search
from lopt.tuning.searches import lr_search as lr_search
