"""How far to trust the proxy: calibration and the noise floor, the protocol's scoring, the report and plots.

Imports core .. study, scoring and optimize, never train.
"""
