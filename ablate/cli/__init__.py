"""The top floor: the command table and thin command wrappers, and the pipelines that compose stages
(the demo, the fidelity protocol's studies, search validation, the post-scoring calibration refresh).

May import every package below; nothing imports it (but `ablate.__main__`).
"""

__all__ = ['app', 'build', 'demo', 'fidelity', 'fidelity_weights', 'optimize', 'optimizing', 'pool', 'proxy', 'score', 'shared', 'steps']
