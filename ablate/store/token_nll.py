"""Each member's per-token losses on each eval set, cached in the pool (the `ensemble` proxy's input).

How to run (from Python; ablate/scoring/ensemble.py fills and reads it):
    from ablate.store import token_nll
    key = token_nll.cache_key(model_sha256, ev, seq_len, "fp32")
    arr = token_nll.read(pool, model_id, ev["domain"], key)      # None: not cached (or cached for other weights)
    token_nll.write(pool, model_id, ev["domain"], key, arr)

This module alone knows the layout: `cache/token_nll/<model_id>/<eval set>.npy` (float32, one NLL per
predicted token, in evaluation window order) beside `<eval set>.json` (the key and the sha256 of the
array's bytes). The key hashes what determines the numbers: the member's weights (its sha256), the eval
data (its sha256), the window length and the precision; a member retrained with other weights, an eval
set rebuilt, or another window length misses the cache and is measured again (and the stale file is
replaced). float32, not float16: the cached sums must reproduce the member's own row (Σ NLL to ~1e-6),
and 4 bytes a token is small beside a model (a 1M-token eval set: 4 MB per member).
A file whose bytes do not match its recorded sha256 is refused with one line, never read as numbers.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np

from ablate.core.config import config_hash
from ablate.core.errors import AblateError
from ablate.store.pool import Pool, atomic_write_bytes

FORMAT = 1  # bump when the array's meaning changes: every old file misses


def cache_key(model_sha256: str, ev: dict, seq_len: int, precision: str) -> str:
    return config_hash({"format": FORMAT, "model": model_sha256, "eval": ev["data_sha256"], "seq_len": seq_len,
                        "precision": precision})


def _paths(pool: Pool, model_id: str, eval_set: str):
    folder = pool.cache_dir / "token_nll" / model_id
    return folder / f"{eval_set}.npy", folder / f"{eval_set}.json"


def read(pool: Pool, model_id: str, eval_set: str, key: str) -> np.ndarray | None:
    """The cached per-token NLL, or None if absent or cached under another key; a corrupt file is an error."""
    data, side = _paths(pool, model_id, eval_set)
    if not data.exists() or not side.exists():
        return None
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        raise AblateError(f"token-loss cache {side} is unreadable: delete {data.parent} to measure it again")
    if meta.get("key") != key:
        return None  # stale: other weights, eval data or window length
    blob = data.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise AblateError(f"token-loss cache {data} does not match its recorded sha256 (corrupt or edited): "
                          f"delete {data.parent} to measure it again")
    arr = np.load(io.BytesIO(blob), allow_pickle=False)
    if arr.dtype != np.float32 or arr.ndim != 1 or arr.size != meta.get("n_tokens"):
        raise AblateError(f"token-loss cache {data} has the wrong shape or type: delete {data.parent}")
    return arr


def write(pool: Pool, model_id: str, eval_set: str, key: str, nll: np.ndarray) -> None:
    """Array first, then its sidecar (atomic each): a crash between them leaves a file whose key is absent
    or old, which reads as a miss, never as another member's numbers."""
    data, side = _paths(pool, model_id, eval_set)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(nll, dtype=np.float32), allow_pickle=False)
    blob = buf.getvalue()
    atomic_write_bytes(data, blob)
    atomic_write_bytes(side, json.dumps({"key": key, "sha256": hashlib.sha256(blob).hexdigest(),
                                         "n_tokens": int(nll.size), "model_id": model_id,
                                         "eval_set": eval_set}).encode())
