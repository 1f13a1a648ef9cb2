"""The ground floor: config, errors, progress, energy, fault points, number formats, mixture weights, the one
reader of a user's text files.

Imported by every other package; imports none of them. Nothing here knows the pool, a model or a corpus.
"""

from ablate.core.lazy import lazy

__all__ = ["StudyConfig", "load_config", "config_hash", "AblateError", "UsageError", "Interrupted", "Meter", "NO_COST",
           "fmt", "num", "num_pct", "ratio", "yes_no", "signed_pct", "rel", "rel_band", "bar", "price_line",
           "parse_weights", "wkey", "is_uniform", "read_text", "decode_text", "faults", "progress"]
# light at start-up (every command loads core): each name is imported from its module on first use
__getattr__ = lazy(__name__, {
    "config": ["StudyConfig", "load_config", "config_hash"], "errors": ["AblateError", "UsageError", "Interrupted"],
    "energy": ["Meter", "NO_COST"], "formats": ["fmt", "num", "num_pct", "ratio", "yes_no", "signed_pct", "rel", "rel_band"],
    "progress": ["bar", "price_line"], "weights": ["parse_weights", "wkey", "is_uniform"],
    "textfile": ["read_text", "decode_text"]})
