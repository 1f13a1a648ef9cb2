"""Base units and eval sets: hold out, tokenize (cached), cut equal-token units.

How to run:
    ablate units split                 # uses the config's corpus, tokenizer and units sections
    ablate units ls

Per domain, documents are put in a seeded order; the first whole documents up to
`units.eval_bytes` become the eval set, so no document is in both. The rest is
tokenized (documents joined with EOS) and cut into `units_per_domain` units of
exactly `unit_tokens` tokens each. Tokens are cached under `pool/cache/tokens`
keyed by the documents' content hash and the tokenizer's hash.

The tokenizer is either trained here (byte-level BPE over the training documents
of every study domain, never the eval documents) or taken from an imported seed.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablate.core.config import StudyConfig, config_hash
from ablate.core.errors import AblateError, UsageError, unknown_name
from ablate.data.evalsets import check_window, count_contaminated, doc_digest, load_eval_file, unit_documents
from ablate.data.evalsets import eval_sets as eval_sets  # re-exported (`x as x`): readers import it here
from ablate.data.evalsets import load_eval_tokens as load_eval_tokens  # re-exported: readers import it here
from ablate.data.tasks import read_task_file, task_row, tokenize_cached
from ablate.data.tokenizer_id import check_tokenizer_unchanged, load_tokenizer, tokenizer_id_of
from ablate.store.index import Index
from ablate.store.pool import Pool, atomic_write_bytes, atomic_write_json, check_name, read_json, staged_dir
from ablate.store.results import now
from ablate.store.study_record import identity

EOS = "<|endoftext|>"


@dataclass
class DomainSplit:
    domain: str
    eval_docs: list[str]
    train_docs: list[str]


def text_sha256(docs: list[str]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def split_documents(domain: str, docs: list[str], eval_bytes: int, seed: int) -> DomainSplit:
    """Seeded document order; whole documents up to eval_bytes go to eval."""
    order = list(range(len(docs)))
    random.Random(f"{seed}:{domain}").shuffle(order)
    taken, n_eval = 0, 0
    while n_eval < len(order) and taken < eval_bytes:
        taken += len(docs[order[n_eval]].encode("utf-8"))
        n_eval += 1
    if n_eval >= len(order):
        raise UsageError(
            f"domain {domain!r} is too small: its {len(docs)} documents ({taken} bytes) do not exceed "
            f"units.eval_bytes={eval_bytes}; lower it or add data")
    return DomainSplit(domain, [docs[i] for i in order[:n_eval]], [docs[i] for i in order[n_eval:]])


# -- tokenizer -----------------------------------------------------------------
def train_tokenizer(cfg: StudyConfig, pool: Pool, splits: dict[str, DomainSplit], scratch: Path):
    """Byte-level BPE on an equal share of every domain's training documents.

    Returns (directory, commit): a new tokenizer is saved in `scratch` and only
    `commit()` moves it into the pool, so a split refused later writes nothing.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    share = cfg.tokenizer.train_bytes // max(1, len(splits))
    sample: list[str] = []
    for domain in sorted(splits):
        taken = 0
        for doc in splits[domain].train_docs:
            if taken >= share:
                break
            sample.append(doc)
            taken += len(doc.encode("utf-8"))
    key = config_hash({"tok": cfg.tokenizer.model_dump(), "data": text_sha256(sample)})
    for existing in sorted(pool.tokenizers_dir.glob(f"*/trained-{key}")):
        return existing.parent, None
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.tokenizer.vocab_size, special_tokens=[EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sample, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS)
    staging = scratch / "tokenizer"
    fast.save_pretrained(str(staging))
    (staging / f"trained-{key}").write_text("tokenizer trained by ablate units split\n")

    def commit() -> Path:
        final = pool.tokenizers_dir / tokenizer_id_of(staging)
        if not final.exists():
            with staged_dir(final) as tmp:
                shutil.copytree(staging, tmp)
        return final

    return staging, commit


def resolve_tokenizer_dir(cfg: StudyConfig, pool: Pool, splits: dict[str, DomainSplit], scratch: Path,
                          force: bool = False):
    if cfg.seed.mode == "import":
        path = Path(cfg.seed.import_path)
        if not path.is_dir():
            raise UsageError(f"seed.import_path {path} is not a directory")
        return path, None
    # A growing pool keeps its tokenizer: adding a domain later must not re-tokenize
    # (and so invalidate) every unit and member already paid for.
    study = pool.root / "study.json"
    if study.exists() and not force:
        info = read_json(study, "study record")
        existing = pool.root / info["tokenizer_dir"]
        if info.get("tokenizer_config") == config_hash(cfg.tokenizer) and existing.is_dir():
            return existing, None
    return train_tokenizer(cfg, pool, splits, scratch)


def token_byte_lengths(tok) -> np.ndarray:
    """UTF-8 bytes each token stands for, so bits-per-byte can be exact per window.

    Byte-level BPE maps every byte to one printable character, so a token's byte
    count is its string length; other tokenizers fall back to decoding each id.
    """
    vocab = tok.get_vocab()
    lengths = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    special = set(tok.all_special_ids)
    backend = getattr(tok, "backend_tokenizer", None)
    byte_level = backend is not None and "ByteLevel" in type(backend.decoder).__name__ + repr(backend.decoder)
    for piece, idx in vocab.items():
        if idx in special:
            continue
        lengths[idx] = len(piece) if byte_level else len(tok.decode([idx]).encode("utf-8"))
    return lengths


def tokenize_docs(tok, tok_id: str, docs: list[str], pool: Pool, pending: list) -> tuple[np.ndarray, bool]:
    """Documents joined with EOS after each, cached by (content, tokenizer). Returns (tokens, cache_hit).

    A cache miss appends its file write to `pending`, run once the whole split is known to be valid.
    """
    key = hashlib.sha256(f"{tok_id}:{text_sha256(docs)}".encode()).hexdigest()[:24]
    path = pool.cache_dir / "tokens" / f"{key}.npy"
    if path.exists():
        return np.load(path), True
    dtype = np.uint16 if len(tok) <= 65535 else np.uint32
    eos = tok.eos_token_id
    ids = tok(docs, add_special_tokens=False)["input_ids"]
    flat = np.fromiter((t for doc in ids for t in (*doc, eos)), dtype=dtype)
    pending.append(lambda: atomic_write_bytes(path, _npy_bytes(flat)))
    return flat, False


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


# -- units and eval sets ------------------------------------------------------------
def _write_tokens(pool: Pool, folder: Path, name: str, tokens: np.ndarray, row: dict, force: bool) -> str:
    """Write <name>.npy then its sidecar; refuse to silently replace different data."""
    check_name(name, "unit id")
    sidecar = folder / f"{name}.json"
    if sidecar.exists():
        old = read_json(sidecar, "unit sidecar")
        if old.get("data_sha256") == row["data_sha256"]:
            if old.get("source_sha256") != row.get("source_sha256"):  # an eval file changed, not its tokens: the
                atomic_write_json(sidecar, row)  # sidecar records the file read now (load_study checks it)
            return "unchanged"
        if not force:
            raise UsageError(
                f"{name} already exists in {pool.root} with other data (settings changed?): "
                f"use a fresh pool or --force")
    atomic_write_bytes(folder / f"{name}.npy", _npy_bytes(tokens))
    atomic_write_json(sidecar, row)
    return "written"


def _row(kind, name, domain, shard, tokens, byte_len, tok_id, path, n_docs) -> dict:
    return {
        "unit_id": name, "kind": kind, "domain": domain, "shard": shard,
        "n_docs": int(n_docs), "n_tokens": int(tokens.size), "n_bytes": int(byte_len[tokens].sum()),
        "data_sha256": hashlib.sha256(f"{tok_id}:".encode() + tokens.tobytes()).hexdigest(),
        "tokenizer_id": tok_id, "path": path, "created_at": now(),
    }


def cut_units(domain: str, tokens: np.ndarray, cfg: StudyConfig) -> list[np.ndarray]:
    """Equal-size slices of the domain's training stream."""
    budget, wanted = cfg.units.unit_tokens, cfg.units.units_per_domain
    have = tokens.size // budget
    if have == 0:
        raise UsageError(
            f"domain {domain!r} has {tokens.size} training tokens, fewer than units.unit_tokens={budget}")
    if have < wanted and not cfg.units.allow_partial:
        raise UsageError(
            f"domain {domain!r} has {tokens.size} training tokens: room for {have} of the "
            f"{wanted} units asked; lower units.unit_tokens or set units.allow_partial=true")
    return [tokens[i * budget:(i + 1) * budget] for i in range(min(have, wanted))]


def seed_tokens(domain: str, train: np.ndarray, cfg: StudyConfig, eos: int) -> np.ndarray:
    """A seed domain's pretraining tokens: its whole training stream, or for a unit domain the whole documents
    after the last unit's end (units are cut from the stream's start), so the seed never sees a unit's token."""
    if domain not in cfg.units.domains:
        return train
    rest = train[len(cut_units(domain, train, cfg)) * cfg.units.unit_tokens:]
    ends = np.flatnonzero(rest == eos)  # skip the rest of a document the last unit cut in two
    mix = rest[ends[0] + 1:] if ends.size else rest[:0]
    if not mix.size:
        raise UsageError(f"seed domain {domain!r} has no whole document left after its units: lower "
                         f"units.unit_tokens or units.units_per_domain, or drop it from seed.domains")
    return mix


def _stage_eval_files(cfg: StudyConfig, pool: Pool, tok, tok_id: str, byte_len, pending: list) -> list[tuple]:
    """(folder, name, tokens, row, docs) per eval set from a file (`eval_sets:`); raises before any write."""
    staged = []
    for name, spec in sorted(cfg.eval_sets.items()):
        if spec.kind != "text":
            staged.append(_stage_task(cfg, pool, name, spec, tok, tok_id, byte_len, pending))
            continue
        docs, file_sha = load_eval_file(name, spec)
        tokens, _ = tokenize_docs(tok, tok_id, docs, pool, pending)
        check_window(name, int(tokens.size), cfg.eval.seq_len)
        row = _row("eval", f"eval-{name}", name, 0, tokens, byte_len, tok_id, f"eval/eval-{name}.npy", len(docs))
        row.update(source=str(spec.path), source_sha256=file_sha, max_bytes=spec.max_bytes)
        staged.append((pool.eval_dir, row["unit_id"], tokens, row, docs))
    return staged


def _stage_task(cfg: StudyConfig, pool: Pool, name: str, spec, tok, tok_id: str, byte_len, pending: list) -> tuple:
    """A task file's (folder, name, tokens, row, documents); its layout file joins the pending writes."""
    examples, file_sha = read_task_file(name, spec)
    tokens, layout = tokenize_cached(name, spec, examples, file_sha, tok, tok_id, cfg.eval.seq_len, pool.cache_dir, pending)
    row = _row("eval", f"eval-{name}", name, 0, tokens, byte_len, tok_id, f"eval/eval-{name}.npy", len(examples))
    row.update(task_row(name, examples, spec.kind, tokens, layout, byte_len, tok_id), source=str(spec.path),
               source_sha256=file_sha, max_bytes=spec.max_bytes)
    pending.append(lambda: atomic_write_bytes(pool.root / row["layout"], _npy_bytes(layout)))
    return pool.eval_dir, row["unit_id"], tokens, row, [e.document for e in examples]


def _plan(cfg: StudyConfig, pool: Pool, corpus: dict[str, list[str]], scratch: Path, force: bool,
          log=print) -> dict:
    """Everything a split would write, computed in memory; raises before any write."""
    for domain in cfg.all_domains:
        if domain not in corpus:
            raise UsageError(f"domain {domain!r} is not in the corpus (has: {', '.join(sorted(corpus))})")
    splits = {d: split_documents(d, corpus[d], cfg.units.eval_bytes, cfg.units.split_seed)
              for d in cfg.all_domains}
    tok_dir, commit_tok = resolve_tokenizer_dir(cfg, pool, splits, scratch, force)
    tok = load_tokenizer(tok_dir)
    tok_id = tokenizer_id_of(tok_dir, tok)
    check_tokenizer_unchanged(pool, tok_id, force, log)
    byte_len = token_byte_lengths(tok)
    hits, staged, pending = 0, [], []
    eval_docs, trained = {}, set()  # for the contamination count: eval documents, digests of unit documents
    for domain in cfg.all_domains:
        train, hit = tokenize_docs(tok, tok_id, splits[domain].train_docs, pool, pending)
        ev, hit2 = tokenize_docs(tok, tok_id, splits[domain].eval_docs, pool, pending)
        hits += hit + hit2
        if domain in cfg.eval_domains:
            row = _row("eval", f"eval-{domain}", domain, 0, ev, byte_len, tok_id, f"eval/eval-{domain}.npy",
                       len(splits[domain].eval_docs))
            row["source"] = f"corpus domain {domain}"
            staged.append((pool.eval_dir, row["unit_id"], ev, row))
            eval_docs[row["unit_id"]] = splits[domain].eval_docs
        if domain in cfg.units.domains:
            parts = cut_units(domain, train, cfg)
            inside = unit_documents(splits[domain].train_docs, train, len(parts) * cfg.units.unit_tokens,
                                    tok.eos_token_id)
            trained.update(doc_digest(d) for d in inside)
            for shard, part in enumerate(parts):
                name = f"{domain}-{shard:02d}"
                # documents with at least one token here (a unit may start or end mid-document)
                n_docs = (part == tok.eos_token_id).sum() + (part[-1] != tok.eos_token_id)
                row = _row("unit", name, domain, shard, part, byte_len, tok_id, f"units/{name}.npy", n_docs)
                staged.append((pool.units_dir, name, part, row))
        if domain in cfg.seed.domains and cfg.seed.mode == "train":
            name, mix = f"seedmix-{domain}", seed_tokens(domain, train, cfg, tok.eos_token_id)
            row = _row("seedmix", name, domain, 0, mix, byte_len, tok_id, f"units/{name}.npy",
                       int((mix == tok.eos_token_id).sum()))
            staged.append((pool.units_dir, name, mix, row))
    for folder, name, tokens, row, docs in _stage_eval_files(cfg, pool, tok, tok_id, byte_len, pending):
        staged.append((folder, name, tokens, row))
        eval_docs[name] = docs
    for _, name, _, row in staged:
        if name in eval_docs:
            row["contaminated_docs"] = count_contaminated(eval_docs[name], trained)
    return {"tok_dir": tok_dir, "commit_tok": commit_tok, "tok_id": tok_id, "hits": hits,
            "staged": staged, "pending": pending}


def split_units(cfg: StudyConfig, pool: Pool, corpus: dict[str, list[str]], force: bool = False,
                log=print) -> dict:
    """The whole `units split` stage; returns a summary (rows written, cache hits)."""
    import tempfile

    pool.ensure_writable()
    with tempfile.TemporaryDirectory(prefix="ablate-split-") as scratch:
        plan = _plan(cfg, pool, corpus, Path(scratch), force, log)
        if not force:  # refuse to replace units that other members were trained on
            for folder, name, _, row in plan["staged"]:
                old = folder / f"{name}.json"
                if old.exists() and read_json(old, "unit sidecar").get("data_sha256") != row["data_sha256"]:
                    raise UsageError(f"{name} already exists in {pool.root} with other data "
                                     f"(settings changed?): use a fresh pool or --force")
        # Every check passed: only now does anything reach the pool.
        tok_dir = plan["commit_tok"]() if plan["commit_tok"] else plan["tok_dir"]
    for write in plan["pending"]:
        write()
    status, rows = {}, []
    for folder, name, tokens, row in plan["staged"]:
        status[name] = _write_tokens(pool, folder, name, tokens, row, force)
        rows.append(row)
    # A tokenizer inside the pool is recorded relative to it, so the pool can move.
    tok_dir = Path(tok_dir).resolve()
    root = pool.root.resolve()
    rel = tok_dir.relative_to(root) if tok_dir.is_relative_to(root) else tok_dir
    atomic_write_json(pool.root / "study.json", {"tokenizer_id": plan["tok_id"], "tokenizer_dir": str(rel),
                                                  "tokenizer_config": config_hash(cfg.tokenizer),
                                                  "config_hash": config_hash(cfg.units), "study": identity(cfg),
                                                  "seed_domains": cfg.seed.domains if cfg.seed.mode == "train" else []})
    Index(pool).upsert("units", rows)  # the index row is written last
    return {"rows": rows, "cache_hits": plan["hits"], "status": status, "tokenizer_dir": str(tok_dir),
            "tokenizer_id": plan["tok_id"]}


# -- reading back ---------------------------------------------------------------------
def unit_ids(pool: Pool, *, required: bool = False) -> list[str]:
    """The pool's base units, sorted (seed-mix token files are not units). `required`: none is
    a step not run yet (exit 2), not an empty answer."""
    units = sorted(p.stem for p in pool.units_dir.glob("*.json") if not p.stem.startswith("seedmix-"))
    if required and not units:
        raise UsageError(f"no units in {pool.root}: run `ablate units split` first")
    return units


def unit_meta(pool: Pool, unit_id: str) -> dict:
    check_name(unit_id, "unit id")
    path = pool.units_dir / f"{unit_id}.json"
    if not path.exists():
        known = unit_ids(pool)
        if not known:
            raise UsageError(f"unknown unit {unit_id!r} (run `ablate units split` first)")
        raise unknown_name("unit", unit_id, known)
    return read_json(path, "unit sidecar")


def load_unit_tokens(pool: Pool, unit_id: str) -> tuple[np.ndarray, dict]:
    meta = unit_meta(pool, unit_id)
    path = pool.units_dir / f"{unit_id}.npy"
    try:
        tokens = np.load(path)
    except (OSError, ValueError) as exc:
        raise AblateError(f"cannot read unit tokens {path}: {exc}") from None
    digest = hashlib.sha256(f"{meta['tokenizer_id']}:".encode() + tokens.tobytes()).hexdigest()
    if digest != meta["data_sha256"]:
        raise AblateError(f"unit {unit_id} tokens {path} do not match their recorded sha256 (corrupted?)")
    return tokens, meta


def seed_domains(cfg: StudyConfig, pool: Pool) -> list[str]:
    """The seed's pretraining domains; `auto` as resolved from the corpus by `units split`."""
    if cfg.seed.domains != "auto":
        return list(cfg.seed.domains)
    info = read_json(pool.root / "study.json", "study record (run `ablate units split` first)")
    if "seed_domains" not in info:
        raise UsageError(f"seed.domains is auto but {pool.root} has no resolved seed domains: "
                         f"run `ablate units split` first")
    return list(info["seed_domains"])


def study_tokenizer(pool: Pool) -> tuple[Path, str]:
    if not (pool.root / "study.json").exists():  # a step not run yet is input (exit 2), not damage
        raise UsageError(f"no units in {pool.root}: run `ablate units split` first")
    info = read_json(pool.root / "study.json", "study record")
    return pool.root / info["tokenizer_dir"], info["tokenizer_id"]
