"""Merged models and their perplexity: merge, evaluate, batched evaluation, screening, sweep (+ backends),
score, uncertainty (how sure a ranking is), the proxy registry (`proxies/`).

Imports core .. study; never train (it scores what training left in the pool), nor the verdict above it
(refreshing fitted rows after scoring is the workflows' job).
"""
