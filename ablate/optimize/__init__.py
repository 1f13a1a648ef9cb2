"""Which mixture to train: the search over candidate mixtures for an eval set.

Imports core .. scoring. Training what it finds (validation) is the commands' job (cli/).
"""

__all__ = ['search']
