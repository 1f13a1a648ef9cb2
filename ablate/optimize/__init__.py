"""Which mixture to train: objectives over eval sets, the search over candidate mixtures (and how sure its
ranking is: ranks), and continuous weights on the simplex by gradients through the merge (the merged route of
`ablate optimize`).

Imports core .. scoring. Training what it finds (validation) is the workflows' job (workflows/).
"""

__all__ = ['gradient', 'merged_route', 'objectives', 'optimization', 'ranks', 'regression_route', 'search', 'simplex',
           'trained']
