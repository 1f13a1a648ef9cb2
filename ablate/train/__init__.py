"""Training: the loop, the ground truths' draws, the seed, the members a study needs, job locks and data parallelism.

Imports core, store, data, models, study (the context and budgets it trains under). `loop.train_member` is
the one way a member, a union or a replicate is trained.
"""

from ablate.train.loop import mixture_sequences, run_training, train_member
from ablate.train.members import build_members, train_truths, union_plan
from ablate.train.seed import import_seed, make_seed, train_seed
from ablate.train.truths import draw_sequences

__all__ = ["train_member", "run_training", "mixture_sequences", "build_members", "train_truths", "union_plan",
           "make_seed", "import_seed", "train_seed", "draw_sequences"]
