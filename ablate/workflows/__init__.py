"""Pipelines: stages composed into what a command does, between the verdict (fidelity/) and the commands (cli/):
the demo, the fidelity protocol's runs, score/sweep/search with the fitted rows refreshed and search validated
by training, and optimized weights validated by retraining.

Imports core .. fidelity; only cli/ imports it. The floor below that trains (train/) is reached from here, so
scoring and optimizing never train a model themselves.
"""

from ablate.workflows.demo import run_demo
from ablate.workflows.fidelity_runs import prepare_study, run_fidelity, run_lengths, truth_mixtures
from ablate.workflows.optimize_runs import validate_optimization
from ablate.workflows.steps import run_search, run_sweep, score_mixture

__all__ = ["score_mixture", "run_sweep", "run_search", "validate_optimization", "run_demo", "run_fidelity",
           "run_lengths", "prepare_study", "truth_mixtures"]
