"""A whole fidelity study on one GPU, as one command that reads only what it carries (no network there).

How to run (docs/scaling.md, "Your own GPU"):
    make gpu-pack                     # here: the Debian corpus + the task file, packed into gpu-carry/corpus.tar.xz
    make gpu-wheels                   # here: wheels for what a bare GPU image lacks, into gpu-carry/wheels/
    make gpu-study OUT=results-gpu    # there (= python3 bench/gpu_study.py run --out results-gpu): ~9 min
    python3 bench/gpu_study.py run --out DIR --size tiny     # the same study at tiny sizes (CPU: < 1 min)
    python3 bench/gpu_study.py run --out DIR --set fidelity.truth_mixtures=20   # any setting, as `--set`

`run` installs the carried wheels where a module is missing (`pip install --no-index --no-deps
--find-links`, into gpu-carry/site, put on PYTHONPATH: nothing of the image is replaced), unpacks the
corpus where the study's config expects it, writes the resolved config to DIR/study.yaml and runs
`ablate fidelity DIR/study.yaml --section --out DIR/FIDELITY.md`: the study's FIDELITY section, and its
JSON beside it (DIR/FIDELITY-<study>.json), plus DIR/gpu-study.json (timings, device, sizes) and
DIR/log.txt. The pool stays in the config's pool folder: a second run on the same machine reuses every
member and only scores. Only the standard library is imported before the wheels are in place.
The study (configs/fidelity-gpu/gpu-study.yaml) and why its seed is pretrained there: docs/scaling.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "fidelity-gpu" / "gpu-study.yaml"
CARRY = ROOT / "gpu-carry"
PACK = "corpus.tar.xz"

# What ablate imports at run time that a bare GPU image (torch, transformers, accelerate, safetensors, typer,
# rich, pyarrow, pandas, scipy, nvidia-ml-py ... already there) lacks: module -> distribution. codecarbon's other
# declared dependencies (authlib, cryptography, pycountry, questionary, arrow: 15 MB) are for its online API and
# CLI, never imported by the offline tracker, so they stay behind and the install is --no-deps.
NEEDED = {"duckdb": "duckdb", "datasets": "datasets", "dill": "dill", "multiprocess": "multiprocess",
          "fsspec": "fsspec", "codecarbon": "codecarbon", "rapidfuzz": "rapidfuzz", "pydantic": "pydantic",
          "pydantic_core": "pydantic-core", "annotated_types": "annotated-types",
          "typing_inspection": "typing-inspection", "typing_extensions": "typing-extensions"}
# the modules whose absence means "install the wheels" (fsspec and typing_extensions are on every image; their
# wheels come along because datasets caps fsspec and pydantic needs a recent typing_extensions)
MISSING_MEANS_INSTALL = ("duckdb", "datasets", "codecarbon", "pydantic", "dill", "multiprocess", "rapidfuzz")
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64", "manylinux_2_35_x86_64"]

# `--size tiny`: the same study, small enough for a CPU test (< 1 min on 2 cores) and a GPU smoke run. Three
# units of three domains, every multi-unit mixture as truth, a seed on webster only (webster: seed-known,
# quotes: new to the seed), the task kept: every kind of target the full study reports.
TINY = ["units.domains=[fiction,bible,computing]", "units.units_per_domain=1", "units.allow_partial=false",
        "units.unit_tokens=4096", "units.eval_bytes=4000", "units.eval_only_domains=[quotes,webster]",
        "corpus.max_bytes_per_domain=150000", "corpus.webster_max_bytes=150000",
        "tokenizer.vocab_size=512", "tokenizer.train_bytes=200000",
        "seed.domains=[webster]", "seed.hidden_size=32", "seed.layers=2", "seed.heads=2",
        "seed.intermediate_size=64", "seed.steps=16", "seed.seq_len=64", "seed.batch_size=8", "seed.lr=3e-3",
        "seed.warmup_steps=2", "train.seq_len=64", "train.batch_size=8", "train.lr=2e-3", "train.optimizer=auto",
        "eval.seq_len=64", "eval.batch_size=16", "energy.backend=estimate",
        "fidelity.truth_mixtures=all", "fidelity.noise_unions=1", "fidelity.title=null"]
SIZES = {"full": [], "tiny": TINY}


# The interpreter its children run in (ablate's config loader, the study): this one, unless ABLATE_BENCH_PYTHON names
# another (the test names a warm one, tests/warm.py, as bench/common.python does)
PYTHON = os.environ.get("ABLATE_BENCH_PYTHON") or sys.executable


def log(msg: str) -> None:
    print(f"[gpu-study {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- here: pack the corpus, download the wheels ---------------------------------------------------------------
def load(config: Path, overrides: list[str]):
    """The study as ablate resolves it (paths absolute); needs ablate's dependencies importable."""
    sys.path.insert(0, str(ROOT))
    from ablate.core.config import load_config

    return load_config(config, overrides)


def pack(args) -> Path:
    """Build the study's Debian corpus (ablate's own builder) and its task files, and pack both, compressed."""
    from ablate.workflows.demo import add_builtin_task
    from ablate.workflows.fidelity_runs import build_shared_corpora

    cfg = load(args.config, SIZES[args.size] + args.set)
    build_shared_corpora([cfg], log)
    corpus = Path(cfg.corpus.path)
    for name in cfg.fidelity.tasks:  # built from the dictionary packages here: the GPU machine has none
        add_builtin_task(cfg, name, log)
    tasks = [Path(cfg.eval_sets[name].path) for name in cfg.fidelity.tasks]
    out = Path(args.carry) / PACK
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w:xz", preset=9) as tar:  # ~4x smaller than the text
        for f in sorted(p for p in corpus.iterdir() if p.is_file()):  # the .cache of rendered man pages stays
            tar.add(f, arcname=f"corpus/{f.name}")
        for f in tasks:
            tar.add(f, arcname=f"tasks/{f.name}")
    tmp.replace(out)
    raw = sum(f.stat().st_size for f in corpus.iterdir() if f.is_file()) + sum(f.stat().st_size for f in tasks)
    log(f"packed {corpus} ({raw / 1e6:.1f} MB) and {len(tasks)} task file(s) into {out} "
        f"({out.stat().st_size / 1e6:.1f} MB)")
    return out


def wheels(args) -> Path:
    """pip download, here, the wheels NEEDED for the GPU machine's Python, at the versions tested here."""
    dest = Path(args.carry) / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{dist}=={importlib.metadata.version(dist)}" for dist in NEEDED.values()]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", args.python_version, "--implementation", "cp", "-d", str(dest)]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    subprocess.run(cmd + pins, check=True)
    keep = {p.replace("-", "_").lower() for p in pins}
    for f in dest.glob("*.whl"):  # one version of each: an older download left there would stop the install
        if "==".join(f.name.split("-")[:2]).lower() not in keep:
            f.unlink()
    size = sum(f.stat().st_size for f in dest.glob("*.whl"))
    log(f"{len(pins)} wheels for Python {args.python_version} in {dest} ({size / 1e6:.1f} MB): {' '.join(pins)}")
    return dest


# ---- there: install, unpack, run ---------------------------------------------------------------------------------
def install(carry: Path) -> dict:
    """Make ablate's dependencies importable: the carried wheels, --no-deps, into carry/site (on PYTHONPATH)."""
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    site = carry / "site"
    missing = [m for m in MISSING_MEANS_INSTALL if importlib.util.find_spec(m) is None]
    if missing or site.is_dir():
        found = sorted((carry / "wheels").glob("*.whl"))
        if missing and not found:
            raise SystemExit(f"missing {', '.join(missing)} and no wheels in {carry / 'wheels'} (make gpu-wheels)")
        if missing:
            log(f"installing {len(found)} carried wheels into {site} (missing here: {', '.join(missing)})")
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                            "--no-compile", "--no-cache-dir", "--upgrade", "--disable-pip-version-check",
                            "--find-links", str(carry / "wheels"), "--target", str(site),
                            *[f.name.split("-")[0] for f in found]], check=True)
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    else:
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if not missing and not site.is_dir():  # this interpreter has everything (a CPU checkout): no slow import check
        env["ABLATE_GPU_STUDY_DEPS"] = "; ".join(f"{d} {importlib.metadata.version(d)}" for d in
                                                 ("torch", "transformers", "datasets", "duckdb", "pydantic"))
        log(env["ABLATE_GPU_STUDY_DEPS"])
        return env
    check = ("import duckdb, datasets, pydantic, torch, transformers; from codecarbon import OfflineEmissionsTracker; "
             "print('; '.join(f'{m.__name__} {m.__version__}' for m in (torch, transformers, datasets, duckdb, "
             "pydantic)), '| cuda:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')")
    res = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"ablate's dependencies do not import:\n{res.stderr[-3000:]}")
    log(res.stdout.strip())
    env["ABLATE_GPU_STUDY_DEPS"] = res.stdout.strip()  # into gpu-study.json: the versions and the GPU it ran with
    return env


def unpack(carry: Path, corpus: Path, domains: list[str]) -> str:
    """The packed corpus into the config's corpus folder (and its tasks beside it), unless it is there already."""
    manifest = corpus / "manifest.json"
    if manifest.exists() and set(domains) <= set(json.loads(manifest.read_text())["domains"]):
        return "already there"
    archive = carry / PACK
    if not archive.exists():
        return f"not packed ({archive}): ablate builds it from the Debian packages"
    folders = {"corpus": corpus, "tasks": corpus.parent / "tasks"}
    with tarfile.open(archive, "r:xz") as tar:
        for member in tar.getmembers():
            top, _, name = member.name.partition("/")
            if top not in folders or not member.isfile() or "/" in name or name.startswith("."):
                raise SystemExit(f"{archive}: unexpected entry {member.name!r}")
            folders[top].mkdir(parents=True, exist_ok=True)
            data = tar.extractfile(member).read()
            tmp = folders[top] / f".{name}.part"
            tmp.write_bytes(data)
            tmp.replace(folders[top] / name)  # manifest.json last written is fine: the files are whole
    return f"unpacked {archive} into {corpus}"


def resolved_config(env: dict, config: Path, overrides: list[str], out: Path) -> dict:
    """Write the config with every override applied and its paths absolute (ablate's own loader, in a child
    process that sees the installed wheels); returns it as a dict."""
    code = ("import json, sys; from ablate.core.config import load_config; "
            "cfg = load_config(sys.argv[1], json.loads(sys.argv[2])); open(sys.argv[3], 'w').write(cfg.to_yaml()); "
            "print(json.dumps(cfg.model_dump(mode='json')))")
    res = subprocess.run([PYTHON, "-c", code, str(config), json.dumps(overrides), str(out / "study.yaml")],
                         env=env, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise SystemExit(f"config {config}: {res.stderr.strip().splitlines()[-1]}")
    return json.loads(res.stdout)


def run(args) -> dict:
    t0 = time.perf_counter()
    out, carry = Path(args.out).resolve(), Path(args.carry).resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides = SIZES[args.size] + args.set
    seconds = {}
    env = install(carry)
    seconds["install"] = time.perf_counter() - t0
    cfg = resolved_config(env, Path(args.config).resolve(), overrides, out)
    domains = sorted(set(cfg["units"]["domains"]) | set(cfg["units"]["eval_only_domains"])
                     | set(cfg["seed"]["domains"] if cfg["seed"]["mode"] == "train" else []))
    log(unpack(carry, Path(cfg["corpus"]["path"]), domains))
    seconds["unpack"] = time.perf_counter() - t0 - seconds["install"]
    log(f"study {cfg['name']}: pool {cfg['pool']}; report {out / 'FIDELITY.md'}")
    t1 = time.perf_counter()
    with open(out / "log.txt", "w") as logf:
        proc = subprocess.Popen([PYTHON, "-m", "ablate", "fidelity", str(out / "study.yaml"), "--section",
                                 "--out", str(out / "FIDELITY.md")], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:  # to the console and to log.txt, as it comes
            sys.stdout.write(line)
            logf.write(line)
        code = proc.wait()
    seconds["study"] = time.perf_counter() - t1
    seconds["total"] = time.perf_counter() - t0
    record = {"config": str(Path(args.config).resolve().relative_to(ROOT)) if Path(args.config).resolve()
              .is_relative_to(ROOT) else str(args.config), "size": args.size, "overrides": overrides,
              "exit_code": code, "seconds": {k: round(v, 1) for k, v in seconds.items()},
              "python": platform.python_version(), "dependencies": env["ABLATE_GPU_STUDY_DEPS"],
              "files": sorted(p.name for p in out.iterdir() if p.is_file())}
    (out / "gpu-study.json").write_text(json.dumps(record, indent=1) + "\n")
    log(f"exit {code} after {seconds['total']:.0f} s (study {seconds['study']:.0f} s); files in {out}: "
        f"{', '.join(record['files'])}")
    if code:
        raise SystemExit(code)
    return record


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("pack", "wheels", "run"):
        p = sub.add_parser(name)
        p.add_argument("--carry", default=str(CARRY), help="folder of what travels to the GPU (default gpu-carry/)")
        if name != "wheels":
            p.add_argument("-c", "--config", type=Path, default=CONFIG)
            p.add_argument("--size", choices=sorted(SIZES), default="full",
                           help="tiny: the CPU test's sizes (and a GPU smoke run)")
            p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="any study setting, after --size (as `ablate --set`)")
    sub.choices["wheels"].add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    sub.choices["run"].add_argument("--out", required=True, help="folder for FIDELITY.md and its JSON")
    args = ap.parse_args(argv)
    {"pack": pack, "wheels": wheels, "run": run}[args.command](args)


if __name__ == "__main__":
    main()
