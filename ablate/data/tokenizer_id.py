"""Tokenizer identity: what a loaded tokenizer does, and refusing to change it under a pool.

How to run:
    ablate units split                 # refuses (exit 2) if the pool was cut with another tokenizer
    ablate units split --force         # re-tokenizes; members trained on the old tokens stay, unused

A pool's token files, unit hashes and member ids all hang on its tokenizer id. The id
was once the hash of tokenizer.json alone, but the same file loaded as another class
(Qwen2 vs GPT-NeoX: tokenizer_config.json names it) tokenizes differently (24 vs 23
tokens on one sentence), so a pool silently reused the old tokens. The id now covers
the class, every file that configures the tokenizer, and the ids it gives a fixed
multilingual probe text the way ablate tokenizes documents (no special tokens, EOS after).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ablate.core.errors import AblateError, UsageError
from ablate.store.pool import Pool, read_json

# Files that can change what a loaded tokenizer does (the class comes from tokenizer_config.json).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model")
# Tokenized as ablate tokenizes documents; scripts, accents, digits and spacing where tokenizer classes differ.
PROBE_TEXT = ("The quick brown fox, naïve café, 12345 + 0.5!  Ünïcödé — «guillemets» "
              "Привет мир. 東京の天気は晴れ。 مرحبا بالعالم 🙂\n\tdef f(x): return x**2")


def load_tokenizer(tok_dir: Path):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise AblateError(f"cannot load tokenizer from {tok_dir}: {str(exc).splitlines()[0]}") from None
    if tok.eos_token_id is None:
        raise AblateError(f"tokenizer in {tok_dir} has no EOS token, needed between documents")
    return tok


def tokenizer_id_of(tok_dir: Path, tok=None) -> str:
    """What the loaded tokenizer does: its class, its files and the ids of a probe text.

    The same tokenizer.json loaded as another class (Qwen2 vs GPT-NeoX) tokenizes
    differently, so hashing that file alone would let a pool reuse the wrong tokens."""
    tok_dir = Path(tok_dir)
    if not (tok_dir / "tokenizer.json").exists():
        raise AblateError(f"no tokenizer.json in {tok_dir}: ablate needs a fast (Rust) tokenizer")
    if tok is None:
        tok = load_tokenizer(tok_dir)
    ids = [*tok(PROBE_TEXT, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    files = {name: hashlib.sha256((tok_dir / name).read_bytes()).hexdigest()
             for name in TOKENIZER_FILES if (tok_dir / name).is_file()}
    key = json.dumps({"class": type(tok).__name__, "files": files, "probe": ids, "size": len(tok)}, sort_keys=True)
    return "tok-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def check_tokenizer_unchanged(pool: Pool, tok_id: str, force: bool, log=print) -> None:
    """Refuse (or, with --force, announce) a tokenizer other than the one the pool's units were cut with.

    Members already trained learned the old token ids: silently re-tokenizing would pair
    them with data they never saw, so the default is to refuse and leave the pool as it is."""
    study = pool.root / "study.json"
    old = read_json(study, "study record").get("tokenizer_id") if study.exists() else None
    if old is None or old == tok_id:
        return
    if not force:
        raise UsageError(f"the pool {pool.root} was tokenized with {old}, the config now gives {tok_id} "
                         f"(another tokenizer): use a fresh pool, or --force to re-tokenize (members trained "
                         f"on {old} stay in the pool, unused)")
    log(f"tokenizer changed: {old} -> {tok_id}; re-tokenizing (--force); members trained on {old} stay "
        f"in the pool, unused")


def check_import_tokenizer(cfg, pool: Pool, force: bool) -> None:
    """`units split` imports the seed before splitting: refuse a changed tokenizer before that import writes."""
    src = Path(cfg.seed.import_path or "")
    if cfg.seed.mode == "import" and (pool.root / "study.json").exists() and (src / "tokenizer.json").exists():
        check_tokenizer_unchanged(pool, tokenizer_id_of(src), force, log=lambda *_: None)
