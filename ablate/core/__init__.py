"""The ground floor: config, errors, progress, energy, fault points, number formats, mixture weights.

Imported by every other package; imports none of them. Nothing here knows the pool, a model or a corpus.
"""

__all__ = ['config', 'energy', 'errors', 'faults', 'formats', 'progress', 'sections', 'weights']
