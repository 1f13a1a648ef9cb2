"""The pool on disk and its index: member files, the DuckDB index and schema, result rows, study identity.

Imports only core. `pool` alone knows the folder layout (mergekit's io/), `results` alone the row layout,
`schema` the tables and views; `index` writes and queries them under a lock.
"""
