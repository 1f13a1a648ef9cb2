"""Build real text corpora from Debian packages, and load any local corpus.

How to run:

    apt-get install -y --no-install-recommends bible-kjv dict-gcide dict-foldoc \\
        dict-jargon fortunes r-cran-janeaustenr python3-doc
    python -m ablate.data.corpus data/debian                       # default domains, ~5 s
    python -m ablate.data.corpus data/small bible,quotes 500000    # two domains, 500 kB each

    from ablate.data.corpus import build_debian_corpus, load_corpus, fortunes_min_corpus
    manifest = build_debian_corpus(Path("data/debian"))
    docs = load_corpus(Path("data/debian"))      # {domain: [text, ...]}

A built corpus is a folder of `<domain>.jsonl` files, one {"text", "domain", "source"}
object per line, plus `manifest.json` (doc and byte counts, Debian package versions,
settings), written last. Output is byte-for-byte deterministic. The per-domain
extractors (what is read from which Debian package, and how it is cleaned) live in
ablate.data.debian; this module writes their documents to disk and reads corpora back.
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

from ablate.core.errors import AblateError, UsageError
from ablate.core.textfile import read_text
from ablate.data.debian import DEBIAN_DOMAINS, FORTUNES, Doc, DomainSpec, fortune_docs, require_packages  # noqa: F401
from ablate.store.pool import atomic_write_bytes, atomic_write_json


def _write_domain(out: Path, domain: str, docs: Iterable[Doc], cap: int | None) -> dict:
    """Write out/<domain>.jsonl atomically, taking docs in order until `cap` bytes."""
    lines, total, sources = [], 0, {}
    for origin, locator, text in docs:
        size = len(text.encode("utf-8"))
        if cap is not None and total + size > cap:
            if not lines:
                raise UsageError(f"byte cap {cap} is smaller than the first document of domain "
                                 f"'{domain}' ({size} bytes); raise the cap")
            break
        row = {"text": text, "domain": domain, "source": f"{origin}#{locator}"}
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        total += size
        sources.setdefault(origin, None)
    if not lines:
        raise AblateError(f"domain '{domain}' produced no documents; is its package complete?")
    atomic_write_bytes(out / f"{domain}.jsonl", "".join(lines).encode("utf-8"))
    return {"docs": len(lines), "bytes": total, "sources": list(sources)}


def _write_corpus(out: Path, docs: dict[str, Callable[[], Iterable[Doc]]], caps: dict,
                  packages: dict, settings: dict, progress: Callable | None) -> dict:
    try:
        out.mkdir(parents=True, exist_ok=True)
        try:
            old = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        # no manifest while files change: a reader never mistakes a half-built corpus for whole
        (out / "manifest.json").unlink(missing_ok=True)
        stats = {}
        for name, make in docs.items():
            t0 = time.monotonic()
            stats[name] = _write_domain(out, name, make(), caps.get(name))
            if progress:
                s = stats[name]
                progress(f"{name}: {s['docs']} docs, {s['bytes'] / 1e6:.2f} MB, "
                         f"{time.monotonic() - t0:.1f} s")
        for stale in set(old.get("domains", {})) - set(stats):  # ours from an earlier build
            if re.fullmatch(r"[\w-]+", stale):
                (out / f"{stale}.jsonl").unlink(missing_ok=True)
        manifest = {"domains": stats, "packages": packages, "settings": settings}
        atomic_write_json(out / "manifest.json", manifest)
    except OSError as e:
        raise AblateError(f"corpus build into {out} failed: {e}") from None
    return manifest


def build_debian_corpus(out: Path, domains: list[str] | None = None, *,
                        webster_max_bytes: int = 8_000_000,
                        max_bytes_per_domain: int | None = None, cache_dir: Path | None = None,
                        progress: Callable[[str], None] | None = None) -> dict:
    """Write out/<domain>.jsonl ({"text","domain","source"} per line) and out/manifest.json;
    return the manifest {"domains": {d: {"docs","bytes","sources"}}, "packages", "settings"}."""
    if domains is not None and not domains:
        raise UsageError(f"no domains requested; valid: {', '.join(DEBIAN_DOMAINS)}")
    names = list(domains) if domains else [d for d, s in DEBIAN_DOMAINS.items() if s.default]
    unknown = [d for d in names if d not in DEBIAN_DOMAINS]
    if unknown:
        raise UsageError(f"unknown Debian domain(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(DEBIAN_DOMAINS)}")
    for label, v in (("webster_max_bytes", webster_max_bytes),
                     ("max_bytes_per_domain", max_bytes_per_domain)):
        if v is not None and (not isinstance(v, int) or v <= 0):
            raise UsageError(f"{label} must be a positive integer, got {v!r}")
    names = list(dict.fromkeys(names))
    packages = require_packages({d: list(DEBIAN_DOMAINS[d].needs) for d in names})
    cache = Path(cache_dir) if cache_dir else Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ablate"
    ctx = {"cache_dir": str(cache)}
    caps = {d: max_bytes_per_domain for d in names}
    if "webster" in caps:
        caps["webster"] = min(webster_max_bytes, max_bytes_per_domain or webster_max_bytes)
    # the builder names predate the package layout (ablate/data/); kept so manifests stay byte-identical
    settings = {"builder": "ablate.corpus.build_debian_corpus", "domains": names,
                "webster_max_bytes": webster_max_bytes,
                "max_bytes_per_domain": max_bytes_per_domain}
    makers = {d: (lambda d=d: DEBIAN_DOMAINS[d].extract(ctx)) for d in names}
    return _write_corpus(Path(out), makers, caps, packages, settings, progress)


def ensure_debian_corpus(out: Path, domains: list[str], *, webster_max_bytes: int = 8_000_000,
                         max_bytes_per_domain: int | None = None, log: Callable[[str], None] = print) -> None:
    """Build the Debian corpus at `out` unless it holds every domain in `domains`. A corpus folder shared by
    studies (configs/fidelity*/ all name data/fidelity-corpus) was built by whichever ran first, with its
    domains only: the next study's missing domains are added (the ones present are rebuilt identically)."""
    manifest = Path(out) / "manifest.json"
    have = set(json.loads(manifest.read_text())["domains"]) if manifest.exists() else set()
    if set(domains) <= have:
        return
    names = sorted(have | set(domains))
    log(f"building the Debian corpus in {out} ({', '.join(names)})" if not have else
        f"adding {', '.join(sorted(set(domains) - have))} to the Debian corpus in {out}")
    build_debian_corpus(Path(out), names, webster_max_bytes=webster_max_bytes,
                        max_bytes_per_domain=max_bytes_per_domain, cache_dir=Path(out) / ".cache")


def fortunes_min_corpus(out: Path) -> dict:
    """A tiny real corpus (~140 KB) from fortunes-min: domains fortunes, literature, riddles."""
    names = ("fortunes", "literature", "riddles")
    packages = require_packages({"fortunes-min": [("fortunes-min", str(FORTUNES / n)) for n in names]})
    makers = {n: (lambda n=n: fortune_docs(FORTUNES / n)) for n in names}
    return _write_corpus(Path(out), makers, {}, packages,
                         {"builder": "ablate.corpus.fortunes_min_corpus", "domains": list(names)},
                         None)


# ---- loading any local corpus ------------------------------------------------------------
_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}


def _corpus_files(path: Path) -> list[Path]:
    if not path.exists():
        raise UsageError(f"corpus path not found: {path}")
    if path.is_file():
        files = [path] if path.suffix in _FORMATS else []
    else:  # recursive, hidden files and folders skipped, the builder's manifest skipped
        files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix in _FORMATS
                        and not any(s.startswith(".") for s in p.relative_to(path).parts)
                        and p != path / "manifest.json"),
                       key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise UsageError(f"no .jsonl, .json, .parquet or .txt files in {path}")
    return files


def _json_error(path: Path, e: ValueError, line: int) -> str:
    """File, line and column of a JSON error: json's own message ("Unterminated string starting at") ends
    where its position was, which `e.msg` leaves off."""
    msg, col = getattr(e, "msg", str(e)), getattr(e, "colno", None)
    where = f"line {line} column {col}" if col else f"line {line}"
    return f"{path}:{line}:{col or 1}: invalid JSON: {msg}{'' if msg.endswith(' at') else ' at'} {where}"


def _read_json(path: Path, fields: tuple[str, str]) -> list[dict]:
    """The rows of a JSON Lines (or JSON array) file, each checked (an object with both fields as strings)."""
    text = read_text(path)
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = [(1, r) for r in json.loads(text)]
        except ValueError as e:
            raise UsageError(_json_error(path, e, getattr(e, "lineno", 1))) from None
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except ValueError as e:
                    raise UsageError(_json_error(path, e, n)) from None
    for n, row in rows:
        if not isinstance(row, dict):
            raise UsageError(f"{path}:{n}: expected a JSON object per line")
        for field in fields:
            if field not in row:
                raise UsageError(f"{path}:{n}: missing field '{field}' (has: {', '.join(row)})")
        if not isinstance(row[fields[1]], str) or not isinstance(row[fields[0]], (str, type(None))):
            raise UsageError(f"{path}:{n}: fields '{fields[0]}' and '{fields[1]}' must be strings")
    return [row for _, row in rows]


def _split_txt(text: str) -> list[str]:
    """Documents of a .txt file: separated by form-feed lines if the file has any, else by
    blank lines (so a file of paragraphs is a file of docs)."""
    text = text.replace("\r\n", "\n")
    sep = r"(?m)^\f[ \t]*$" if re.search(r"(?m)^\f[ \t]*$", text) else r"\n[ \t]*\n"
    return [d.strip() for d in re.split(sep, text)]


def _load_file(path: Path, fmt: str, fields: tuple[str, str], cache: str) -> list[tuple]:
    """(domain, text) of each document of one file. JSON and text go through the one reader of a user's text
    (ablate/core/textfile.py: a leading byte-order mark dropped); Parquet, binary, through `datasets`."""
    import datasets

    if fmt == "json":
        return [(row[fields[1]], row[fields[0]]) for row in _read_json(path, fields)]
    if fmt == "text":
        return [(path.stem, d) for d in _split_txt(read_text(path))]
    try:
        ds = datasets.load_dataset(fmt, data_files=[str(path)], split="train", cache_dir=cache)
    except Exception as e:  # datasets/pyarrow raise many types for unreadable files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"cannot read {path}: {first}") from None
    for field in fields:
        if field not in ds.column_names:
            raise UsageError(f"{path}: missing field '{field}' (has: {', '.join(ds.column_names)})")
    return list(zip(ds[fields[1]], ds[fields[0]]))


def read_documents(path: Path, text_field: str = "text", fmt: str | None = None) -> list[str]:
    """The non-empty documents of one .jsonl/.json/.parquet/.txt file, in file order (an eval file);
    `fmt` ("jsonl", "json", "parquet", "txt") for a file whose name has no such suffix."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"file not found: {path}")
    suffix = f".{fmt}" if fmt else path.suffix
    if suffix not in _FORMATS:
        raise UsageError(f"{path}: unsupported format (use .jsonl, .json, .parquet or .txt, or set its format:)")
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory(prefix="ablate-hf-") as cache:
            # the text field twice: an eval file has no domain field to check
            rows = _load_file(path, _FORMATS[suffix], (text_field, text_field), cache)
    finally:
        if bars:
            datasets.enable_progress_bars()
    return [text for _, text in rows if isinstance(text, str) and text.strip()]


def load_corpus(path: Path, *, domain_field: str = "domain", text_field: str = "text",
                domains: list[str] | None = None) -> dict[str, list[str]]:
    """Load .jsonl/.json/.parquet/.txt files (a folder, recursively, or one file) through
    `datasets`, offline. Returns {domain: [texts in file order]} with domains sorted.
    A .txt file is one domain named after its stem; see _split_txt for its documents.
    Whitespace-only documents are dropped."""
    path = Path(path)
    files = _corpus_files(path)
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # local files only: never reach for the hub
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    found: dict[str, list[str]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ablate-hf-") as cache:
            for f in files:
                for domain, text in _load_file(f, _FORMATS[f.suffix], (text_field, domain_field),
                                               cache):
                    if not isinstance(domain, str) or not domain:
                        raise UsageError(f"{f}: every '{domain_field}' must be a non-empty string")
                    docs = found.setdefault(domain, [])
                    if isinstance(text, str) and text.strip():
                        docs.append(text)
    finally:
        if bars:  # leave the global setting as we found it
            datasets.enable_progress_bars()
    wanted = sorted(set(domains)) if domains else sorted(found)
    absent = [d for d in wanted if d not in found]
    if absent:
        raise UsageError(f"domain(s) {', '.join(absent)} not in {path}; available: "
                         f"{', '.join(sorted(found)) or 'none'}")
    empty = [d for d in wanted if not found[d]]
    if empty:
        raise UsageError(f"domain(s) {', '.join(empty)} in {path} have no non-empty documents")
    return {d: found[d] for d in wanted}


def study_corpus(cfg) -> dict[str, list[str]]:
    """The documents of a study (ablate.core.config.StudyConfig): every domain it names
    (cfg.all_domains), loaded from cfg.corpus.path with the configured field names.
    `seed.domains: auto` is resolved here, in place, from the domains the corpus has."""
    path = Path(cfg.corpus.path)
    if not path.exists():  # say how to make it, not just that it is missing
        hint = (f"; build it with `ablate corpus build debian --out {path}`"
                if cfg.corpus.source == "debian" else "")
        raise UsageError(f"corpus not found at {path}{hint}")
    docs = load_corpus(path, domain_field=cfg.corpus.domain_field, text_field=cfg.corpus.text_field)
    if cfg.seed.mode == "train" and cfg.seed.domains == "auto":
        cfg.seed.domains = resolve_seed_domains(cfg, sorted(docs), path)
    for setting in ("units.domains", "units.eval_only_domains", "seed.domains"):
        section, field = setting.split(".")
        if setting == "seed.domains" and cfg.seed.mode != "train":
            continue
        absent = [d for d in getattr(getattr(cfg, section), field) if d not in docs]
        if absent:
            raise UsageError(f"{setting} names {', '.join(absent)}, not a domain of {path} "
                             f"(its '{cfg.corpus.domain_field}' values: {', '.join(sorted(docs))})")
    return {d: docs[d] for d in cfg.all_domains}


def resolve_seed_domains(cfg, available: list[str], path: Path) -> list[str]:
    """`seed.domains: auto` on your own corpus: every domain that is neither a unit nor an eval-only
    domain, so the seed never sees unit data. None left is an error that says what to do."""
    left = [d for d in available if d not in cfg.eval_domains]
    if not left:
        raise UsageError(
            f"seed.domains is auto, but every domain of {path} ({', '.join(available)}) is a unit or eval-only "
            f"domain, so none is left to pretrain the seed on: import a pretrained seed "
            f"(--set seed.mode=import --set seed.import_path=DIR, any local HF causal LM) or add a domain of "
            f"general text and name it in seed.domains")
    return left


def corpus_domains(cfg) -> list[str]:
    """Domains the study's corpus has or will have (Debian: every domain it can build; ensure_debian_corpus
    adds the ones a built corpus lacks)."""
    path = Path(cfg.corpus.path)
    if cfg.corpus.source == "debian":
        return sorted(DEBIAN_DOMAINS)
    if not path.exists():
        raise UsageError(f"corpus not found at {path}")
    return sorted(load_corpus(path, domain_field=cfg.corpus.domain_field, text_field=cfg.corpus.text_field))


if __name__ == "__main__":  # python -m ablate.data.corpus OUT [DOMAIN,...] [MAX_BYTES_PER_DOMAIN]
    t0, args = time.monotonic(), sys.argv[1:] + [None, None]
    try:
        build_debian_corpus(Path(args[0]), args[1].split(",") if args[1] else None,
                            max_bytes_per_domain=int(args[2]) if args[2] else None, progress=print)
    except AblateError as e:  # one line on stderr; exit 2 for bad input, 1 otherwise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    print(f"built {args[0]} in {time.monotonic() - t0:.1f} s")
