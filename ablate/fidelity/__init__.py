"""How far to trust the proxy: calibration and the noise floor, the protocol's scoring, the report and plots.

Imports core .. optimize.
"""

__all__ = ['calibrate', 'plots', 'protocol', 'report', 'weights_report']
