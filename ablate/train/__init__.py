"""Training: the loop, the ground truths' draws, the seed, the members a study needs, job locks and data parallelism.

Imports core, store, data, models, study (the context and budgets it trains under). `loop.train_member` is
the one way a member, a union or a replicate is trained.
"""
