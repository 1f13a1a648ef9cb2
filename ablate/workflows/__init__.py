"""Pipelines: stages composed into what a command does, between the verdict (fidelity/) and the commands (cli/):
the demo, the fidelity protocol's runs, score/sweep/search with the fitted rows refreshed and search validated
by training, and optimized weights validated by retraining.

Imports core .. fidelity; only cli/ imports it. The floor below that trains (train/) is reached from here, so
scoring and optimizing never train a model themselves.
"""
