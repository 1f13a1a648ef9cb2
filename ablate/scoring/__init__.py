"""Merged models and their perplexity: merge, evaluate, batched evaluation, screening, sweep (+ backends),
score, uncertainty (how sure a ranking is), the proxy registry (`proxies/`).

Imports core .. train (never the verdict above it: refreshing fitted rows after scoring is the commands' job).
"""

__all__ = ['batched', 'evaluate', 'inplace', 'merge', 'mixtures', 'proxies', 'score', 'screen', 'sweep', 'sweep_dask', 'sweep_segment', 'uncertainty', 'verify']
