"""Which mixture to train: objectives over eval sets, the search over candidate mixtures (and how sure its
ranking is: ranks), and continuous weights on the simplex (`ablate optimize`: a typed plan, routes registered in
routes.py, one protocol every route follows in protocol.py: split, descent, held comparison, proxy error, gate).

Imports core .. study and scoring, never train. Training what it finds (validation) is the workflows' job (workflows/).
"""
