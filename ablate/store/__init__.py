"""The pool on disk and its index: member files, the DuckDB index and schema, result rows, study identity.

Imports only core. `pool` alone knows the folder layout (mergekit's io/), `results` alone the row layout,
`schema` the tables and views; `index` writes and queries them under a lock.
"""

from ablate.core.lazy import lazy

__all__ = ["Pool", "atomic_write_bytes", "atomic_write_json", "read_json", "sha256_file", "Index", "MIN_MIXTURES",
           "write_rows", "existing_rows", "make_row", "row_id", "now", "attach_cost", "write_search_rows",
           "write_optimization_row", "read_optimization_row", "identity", "check_pool_study", "token_nll"]
# light at start-up (the CLI loads store.pool): duckdb (store.index) is imported when a name needs it
__getattr__ = lazy(__name__, {
    "pool": ["Pool", "atomic_write_bytes", "atomic_write_json", "read_json", "sha256_file"], "index": ["Index"],
    "schema": ["MIN_MIXTURES"],
    "results": ["write_rows", "existing_rows", "make_row", "row_id", "now", "attach_cost", "write_search_rows",
                "write_optimization_row", "read_optimization_row"],
    "study_record": ["identity", "check_pool_study"]})
