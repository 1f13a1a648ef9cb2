"""The study's vocabulary: its context (seed, eval sets, recipes, member ids) and its ground truths' budgets.

Imports core, store, data, models; nothing here trains. Training (train/), scoring, optimize and fidelity all
speak it, so `load_study` and `member_id` are the one answer to "which member is this unit".
"""
