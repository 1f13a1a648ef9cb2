"""The ground floor: config, errors, progress, energy, fault points, number formats, mixture weights, the one
reader of a user's text files.

Imported by every other package; imports none of them. Nothing here knows the pool, a model or a corpus.
"""
