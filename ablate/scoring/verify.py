"""`ablate pool verify`: every member's weights against its sidecar.

Checks, per member: the sidecar parses, the weights file exists with the recorded
size and sha256, its safetensors header reads, and every tensor has the seed's
name, shape and dtype. A problem is reported with its path; the others go on.
"""

from __future__ import annotations

from ablate.core.errors import AblateError
from ablate.models.model import check_weights_file
from ablate.scoring.merge import header
from ablate.store.pool import Pool, read_json, seed_of


def verify_pool(pool: Pool) -> tuple[int, list[str]]:
    ok, problems, seeds = 0, [], {}
    if not pool.models_dir.is_dir():
        return 0, []
    for d in sorted(p for p in pool.models_dir.iterdir() if not p.name.startswith(".")):
        try:
            meta = read_json(d / "meta.json", "member sidecar")
            path = d / "model.safetensors"
            check_weights_file(path, meta, full_hash=True)
            seed_id = seed_of(meta)
            if seed_id not in seeds:
                seeds[seed_id] = header(pool.weights_path(seed_id))
            if header(path) != seeds[seed_id]:
                raise AblateError(f"tensors of {path} differ from the seed {seed_id}'s names/shapes/dtypes")
            ok += 1
        except AblateError as exc:
            problems.append(str(exc))
        except Exception as exc:  # keep going: one bad member must not hide the others
            problems.append(f"{d}: {type(exc).__name__}: {exc}")
    return ok, problems
