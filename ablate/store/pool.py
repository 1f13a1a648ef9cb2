"""The pool: model members on disk, their sidecars, and atomic file and directory writes.

How to run:
    ablate pool ls          # members with their costs
    ablate pool verify      # every weight file against its recorded sha256 and shapes
    ablate pool reindex     # rebuild index.duckdb from the files

Layout under the pool root (`pool/` by default):
    models/<model_id>/model.safetensors + meta.json   a member; meta.json is the truth
    models/<seed_id>/config.json, tokenizer files      the seed also stores its HF dir
    units/<unit_id>.npy + .json                        token files of base units
    eval/<domain>.npy + .json                          held-out eval sets
    tokenizers/<tokenizer_id>/                         trained tokenizers
    results/*.jsonl                                    evaluation rows (truth for the index)
    work/<model_id>/                                   checkpoints of unfinished runs
    index.duckdb                                       derived; `ablate pool reindex` rebuilds it

A member becomes visible only by renaming its finished staging directory into
`models/`, after `meta.json` (written last) is on disk, so a crash never leaves
something that looks complete. Every other write is staged and renamed into place
the same way, through the helpers here: `atomic_write_bytes`/`atomic_write_json` (a
small file), `staged_file` (a file written by a library, e.g. a checkpoint),
`staged_dir` (a directory outside the pool: an exported or imported model, a
tokenizer) and `Pool.staged_member` (a member).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ablate.core import faults
from ablate.core.errors import AblateError, UsageError

# mkstemp creates 0600 files; published files get the usual umask permissions instead.
_UMASK = os.umask(0)
os.umask(_UMASK)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(name: str, what: str = "name") -> str:
    """Names become file names: refuse anything that could leave the pool."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise UsageError(f"invalid {what} {name!r}: use letters, digits, '-', '_' and '.' only")
    return name


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


@contextmanager
def staged_file(path: Path, tmp: Path | None = None) -> Iterator[Path]:
    """A temporary name beside `path` (default: its suffix replaced by .tmp) for the block to write;
    renamed over `path` when the block succeeds, so readers see the old file or the new one, and
    removed when it fails."""
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A hidden sibling of `final` (`.<name>.partial`, not created) for the block to build a directory in;
    renamed to `final` when the block succeeds, deleted when it fails. `final` must be absent or empty
    (callers refuse a non-empty one before building)."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)  # a partial one left by a killed process
    try:
        yield tmp
        if final.exists():
            final.rmdir()
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AblateError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AblateError(f"corrupted {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise AblateError(f"corrupted {what} {path}: expected a JSON object")
    return data


def seed_of(meta: dict) -> str:
    """The id of the seed a member was trained from; a seed's sidecar names itself (seed_id = model_id)."""
    return meta["seed_id"]


class Pool:
    """A directory of members plus the paths of everything else a study stores."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def units_dir(self) -> Path:
        return self.root / "units"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def tokenizers_dir(self) -> Path:
        return self.root / "tokenizers"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def index_path(self) -> Path:
        return self.root / "index.duckdb"

    def member_dir(self, model_id: str) -> Path:
        return self.models_dir / check_name(model_id, "model id")

    def work_dir(self, model_id: str) -> Path:
        return self.root / "work" / check_name(model_id, "model id")

    def ensure_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise AblateError(f"pool directory {self.root} is not writable: {exc.strerror or exc}") from None

    # -- members -------------------------------------------------------------
    def has_member(self, model_id: str) -> bool:
        return (self.member_dir(model_id) / "meta.json").is_file()

    def read_meta(self, model_id: str) -> dict:
        path = self.member_dir(model_id) / "meta.json"
        if not path.exists():
            raise AblateError(f"no pool member {model_id!r} in {self.models_dir}")
        return read_json(path, "member sidecar")

    def iter_metas(self, kind: str | None = None) -> Iterator[dict]:
        """Every finished member's sidecar, in id order; corrupted sidecars raise."""
        if not self.models_dir.is_dir():
            return
        for d in sorted(self.models_dir.iterdir()):
            if d.name.startswith(".") or not (d / "meta.json").exists():
                continue
            meta = read_json(d / "meta.json", "member sidecar")
            if kind is None or meta.get("kind") == kind:
                yield meta

    def staging_dir(self, model_id: str) -> Path:
        """A private directory under models/ (hidden name) to assemble a member in."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        path = self.models_dir / f".staging-{model_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    @contextmanager
    def staged_member(self, meta: dict) -> Iterator[Path]:
        """A private directory for the block to write a member's files in; published under
        meta["model_id"] when the block succeeds (so the block may still fill `meta`, e.g. the
        weights' sha256), deleted when it fails."""
        staging = self.staging_dir(meta["model_id"])
        try:
            yield staging
            self.publish(staging, meta)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def publish(self, staging: Path, meta: dict) -> Path:
        """Write meta.json last, then rename the staging dir into place (atomic)."""
        faults.point("publish.staged")
        atomic_write_json(staging / "meta.json", meta)
        fsync_dir(staging)
        final = self.member_dir(meta["model_id"])
        old = None
        if final.exists():  # --force: move the old member aside, then swap
            old = final.with_name(f".old-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
        os.replace(staging, final)
        fsync_dir(self.models_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def clean_leftovers(self) -> list[str]:
        """Delete staging/old dirs left by killed processes (their pid is in the name)."""
        removed = []
        if not self.models_dir.is_dir():
            return removed
        for d in self.models_dir.iterdir():
            if not d.name.startswith((".staging-", ".old-")):
                continue
            try:
                pid = int(d.name.rsplit("-", 2)[-2])
            except ValueError:
                continue
            if pid != os.getpid() and not pid_alive(pid):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
        return removed

    def weights_path(self, model_id: str) -> Path:
        return self.member_dir(model_id) / "model.safetensors"

    def seed_dir(self, seed_id: str) -> Path:
        return self.member_dir(seed_id)
