"""Text in, tokens out: corpus sources (Debian packages, the user's files), eval sets, units, tokenizer identity.

Imports core and store (units and eval sets are pool files with sidecars).
"""
