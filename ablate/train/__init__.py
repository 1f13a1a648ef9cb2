"""Training: the loop, the ground truths (budgets and draws), member identity (the study context), the seed,
job locks and data parallelism.

Imports core, store, data, models. `loop.train_member` is the one way a member, a union or a replicate is trained.
"""

__all__ = ['data_parallel', 'locks', 'loop', 'seed', 'study', 'truths']
