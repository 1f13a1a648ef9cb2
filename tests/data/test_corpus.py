"""Tests for ablate.data.corpus and ablate.data.debian: real Debian text in, deterministic JSONL out,
and a loader that turns every kind of bad input into one clear line."""
import json
import time
from pathlib import Path

import pytest

from ablate.core.config import StudyConfig
from ablate.core.errors import AblateError, UsageError
from ablate.data import corpus, debian
from ablate.data.corpus import build_debian_corpus, fortunes_min_corpus, load_corpus, study_corpus

DEFAULT = ["fiction", "bible", "webster", "computing", "pydocs", "quotes"]


def _build(*args, **kw):
    """Build, but skip (not fail) on a machine that lacks the Debian packages."""
    try:
        return build_debian_corpus(*args, **kw)
    except AblateError as e:
        if "missing Debian package" in str(e):
            pytest.skip(str(e))
        raise


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("debian")
    return out, _build(out, max_bytes_per_domain=300_000, webster_max_bytes=200_000)


def test_build_all_default_domains(built):
    out, manifest = built
    assert sorted(manifest["domains"]) == sorted(DEFAULT)
    assert manifest["settings"]["domains"] == DEFAULT
    assert set(manifest["packages"]) >= {"bible-kjv", "dict-gcide", "fortunes", "python3-doc"}
    for domain, stats in manifest["domains"].items():
        rows = _rows(out / f"{domain}.jsonl")
        assert len(rows) == stats["docs"] > 10
        assert all(list(r) == ["text", "domain", "source"] for r in rows)
        assert all(r["domain"] == domain and r["text"].strip() for r in rows)
        assert sum(len(r["text"].encode()) for r in rows) == stats["bytes"]
        assert stats["bytes"] <= (200_000 if domain == "webster" else 300_000)
        assert {r["source"].split("#")[0] for r in rows} == set(stats["sources"])
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_build_is_deterministic(built, tmp_path):
    out, _ = built
    _build(tmp_path, max_bytes_per_domain=300_000, webster_max_bytes=200_000)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_cleaning_leaves_no_dictionary_markup(built):
    out, _ = built
    webster = " ".join(r["text"] for r in _rows(out / "webster.jsonl"))
    assert "[1913 Webster]" not in webster and "{" not in webster and "[=a]" not in webster
    assert "ā" in webster  # [=a] escapes became real letters
    pydocs = " ".join(r["text"] for r in _rows(out / "pydocs.jsonl"))
    assert ":func:`" not in pydocs and ".. index::" not in pydocs
    quotes = _rows(out / "quotes.jsonl")
    assert not any(line.strip() == "%" for r in quotes for line in r["text"].splitlines())


def test_bible_uncapped_has_every_chapter(tmp_path):
    manifest = _build(tmp_path, ["bible"])
    rows = _rows(tmp_path / "bible.jsonl")
    assert manifest["domains"]["bible"]["docs"] == len(rows) == 1189
    assert rows[0]["text"].startswith("Genesis 1\n\n1 In the beginning God created")
    assert rows[-1]["source"] == "bible-kjv#Revelation 22"


def test_rebuild_removes_stale_domains_and_crash_leaves_no_manifest(tmp_path, monkeypatch):
    _build(tmp_path, ["bible", "quotes"], max_bytes_per_domain=50_000)
    _build(tmp_path, ["quotes"], max_bytes_per_domain=50_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "quotes.jsonl"]

    def crash(ctx):
        yield "x", "1", "one doc"
        raise RuntimeError("disk on fire")
    spec = corpus.DEBIAN_DOMAINS["quotes"]
    monkeypatch.setitem(corpus.DEBIAN_DOMAINS, "quotes",
                        debian.DomainSpec(spec.about, spec.needs, crash))
    with pytest.raises(RuntimeError):
        build_debian_corpus(tmp_path, ["quotes"])
    # no manifest means "not a finished corpus"; no temp file or half-written JSONL is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quotes.jsonl"]
    assert len(_rows(tmp_path / "quotes.jsonl")) > 1  # the previous complete file


def test_bad_builder_arguments(tmp_path, monkeypatch):
    with pytest.raises(UsageError) as e:
        build_debian_corpus(tmp_path, ["bible", "klingon"])
    assert "klingon" in _one_line(e) and "webster" in str(e.value)
    with pytest.raises(UsageError):
        build_debian_corpus(tmp_path, ["bible"], max_bytes_per_domain=0)
    with pytest.raises(UsageError) as e:
        _build(tmp_path, ["bible"], max_bytes_per_domain=10)
    assert "bible" in _one_line(e)
    monkeypatch.setattr(debian, "_dpkg", lambda pkgs: {})  # dpkg says: nothing installed
    with pytest.raises(AblateError) as e:
        build_debian_corpus(tmp_path, ["bible", "computing"])
    assert _one_line(e) == ("missing Debian package(s) for domains 'bible', 'computing': run "
                            "`apt-get install -y --no-install-recommends bible-kjv dict-foldoc "
                            "dict-jargon`")
    assert not isinstance(e.value, UsageError)


def test_manpage_render_is_cached(tmp_path):
    page = Path("/usr/share/man/man7/signal.7.gz")
    if not page.exists() or not debian.shutil.which("man") or not debian.shutil.which("col"):
        pytest.skip("man, col or manpages not installed")
    text = debian._render_man(str(page), tmp_path)
    assert "NAME" in text and "signal" in text and "\b" not in text
    (cached,) = tmp_path.iterdir()
    cached.write_text("from the cache")
    assert debian._render_man(str(page), tmp_path) == "from the cache"


def test_fortunes_min_corpus_is_small_fast_and_loadable(tmp_path):
    t0 = time.monotonic()
    try:
        manifest = fortunes_min_corpus(tmp_path)
    except AblateError as e:
        pytest.skip(str(e))
    assert time.monotonic() - t0 < 1.0
    assert sorted(manifest["domains"]) == ["fortunes", "literature", "riddles"]
    assert 50_000 < sum(s["bytes"] for s in manifest["domains"].values()) < 200_000
    loaded = load_corpus(tmp_path)
    assert list(loaded) == ["fortunes", "literature", "riddles"]
    for domain, docs in loaded.items():
        assert docs == [r["text"] for r in _rows(tmp_path / f"{domain}.jsonl")]


def test_load_round_trips_builder_output(built):
    out, manifest = built
    loaded = load_corpus(out, domains=["quotes", "bible"])
    assert list(loaded) == ["bible", "quotes"]
    assert loaded["bible"] == [r["text"] for r in _rows(out / "bible.jsonl")]
    assert load_corpus(out / "quotes.jsonl") == {"quotes": loaded["quotes"]}


def test_load_parquet_json_array_and_custom_fields(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"body": ["first", "  ", "second", "third"], "topic": ["b", "b", "a", "b"]})
    pq.write_table(table, tmp_path / "part.parquet")
    rows = [{"body": "fourth", "topic": "a"}]
    (tmp_path / "more.json").write_text(json.dumps(rows))
    loaded = load_corpus(tmp_path, text_field="body", domain_field="topic")
    # files in sorted order (more.json, part.parquet); whitespace-only docs dropped
    assert loaded == {"a": ["fourth", "second"], "b": ["first", "third"]}


def test_load_text_files(tmp_path):
    (tmp_path / "poems.txt").write_text("Roses are red.\nViolets blue.\n\n\nSecond one.\n")
    (tmp_path / "essays.txt").write_text("Essay one.\n\nStill essay one.\n\f\nEssay two.\n\f\n")
    (tmp_path / "notes.md").write_text("ignored: not a corpus format")
    assert load_corpus(tmp_path) == {
        "essays": ["Essay one.\n\nStill essay one.", "Essay two."],
        "poems": ["Roses are red.\nViolets blue.", "Second one."],
    }


@pytest.mark.parametrize("name, content, cls, needle", [
    ("bad.jsonl", '{"text": "a", "domain": "x"}\n\n{"text": "b", "domain": \n', UsageError,
     "bad.jsonl:3:25: invalid JSON: Expecting value at line 3 column 25"),
    # the position json's message ends on is kept: file, line and column
    ("cut.jsonl", '{"text": "a", "domain": "x"}\n{"text": "a", "domain": "x}\n', UsageError,
     "cut.jsonl:2:25: invalid JSON: Unterminated string starting at line 2 column 25"),
    ("cut.json", '[{"text": "a", "domain": "x"},\n {"text": "b', UsageError,
     "cut.json:2:11: invalid JSON: Unterminated string starting at line 2 column 11"),
    ("nofield.jsonl", '{"text": "a", "domain": "x"}\n{"domain": "x"}\n', UsageError,
     "nofield.jsonl:2: missing field 'text'"),
    ("nodomain.jsonl", '{"text": "a"}\n', UsageError, "missing field 'domain'"),
    ("empty.jsonl", '{"text": "a", "domain": "x"}\n{"text": " \\n", "domain": "y"}\n',
     UsageError, "y in"),
    ("latin1.txt", "caf\xe9 au lait".encode("latin-1"), UsageError, "latin1.txt is not UTF-8"),
    ("latin1.jsonl", '{"text": "caf\xe9", "domain": "x"}\n'.encode("latin-1"), UsageError,
     "latin1.jsonl is not UTF-8"),
    ("notes.md", "hello", UsageError, "no .jsonl, .json, .parquet or .txt files"),
])
def test_load_bad_inputs(tmp_path, name, content, cls, needle):
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(cls) as e:
        load_corpus(tmp_path)
    assert needle in _one_line(e)


def test_load_missing_path_and_unknown_domain(tmp_path):
    with pytest.raises(UsageError) as e:
        load_corpus(tmp_path / "nope")
    assert "nope" in _one_line(e)
    (tmp_path / "c.jsonl").write_text('{"text": "a", "domain": "x"}\n{"text": "b", "domain": "z"}\n')
    with pytest.raises(UsageError) as e:
        load_corpus(tmp_path, domains=["x", "w"])
    assert "w not in" in _one_line(e) and "available: x, z" in str(e.value)


def _study(path: Path, source: str = "files") -> StudyConfig:
    return StudyConfig(corpus={"path": str(path), "source": source},
                       units={"domains": ["fortunes", "literature"], "eval_only_domains": []},
                       seed={"domains": ["riddles"]})


def test_study_corpus_loads_every_domain_of_the_study(tmp_path):
    try:
        fortunes_min_corpus(tmp_path)
    except AblateError as e:
        pytest.skip(str(e))
    docs = study_corpus(_study(tmp_path))
    assert list(docs) == ["fortunes", "literature", "riddles"]  # units + seed domains
    assert docs == load_corpus(tmp_path)


def test_study_corpus_missing_path_says_how_to_build(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UsageError) as e:
        study_corpus(_study(missing, "debian"))
    assert _one_line(e) == (f"corpus not found at {missing}; build it with "
                            f"`ablate corpus build debian --out {missing}`")
    with pytest.raises(UsageError) as e:
        study_corpus(_study(missing, "files"))
    assert _one_line(e) == f"corpus not found at {missing}"


def test_manpages_rendering_shows_progress(monkeypatch, tmp_path):
    from contextlib import contextmanager

    from ablate.core import progress
    from ablate.data import debian

    pages = [f"/usr/share/man/man1/p{i}.1.gz" for i in range(3)]
    calls = []

    @contextmanager
    def recording_bar(description, total, completed=0, fields=None):
        calls.append(("open", description, total))
        yield lambda advance=1, **values: calls.append(("update", advance, values.get("page")))

    monkeypatch.setattr(debian, "_man_page_files", lambda: pages)
    monkeypatch.setattr(debian, "_render_man", lambda page, cache: f"NAME\n    {page}")
    monkeypatch.setattr(progress, "bar", recording_bar)
    docs = list(debian._manpages({"cache_dir": str(tmp_path)}))
    assert len(docs) == 3
    assert calls[0] == ("open", "manpages: rendering", 3)
    assert calls[1:] == [("update", 1, f"p{i}.1.gz") for i in range(3)]



def test_a_shared_corpus_gains_the_domains_a_later_study_needs(built, tmp_path):
    """Studies share one corpus folder (configs/fidelity*/): the first builds it with its domains; a later
    study's missing domain is added and the domains already there come out byte-identical."""
    from ablate.data.corpus import ensure_debian_corpus

    _build(tmp_path, ["quotes"], max_bytes_per_domain=300_000)
    quotes = (tmp_path / "quotes.jsonl").read_bytes()
    said = []
    ensure_debian_corpus(tmp_path, ["bible", "quotes"], max_bytes_per_domain=300_000, log=said.append)
    assert said == [f"adding bible to the Debian corpus in {tmp_path}"]
    assert sorted(json.loads((tmp_path / "manifest.json").read_text())["domains"]) == ["bible", "quotes"]
    assert (tmp_path / "quotes.jsonl").read_bytes() == quotes
    assert (tmp_path / "bible.jsonl").read_bytes() == (built[0] / "bible.jsonl").read_bytes()
    ensure_debian_corpus(tmp_path, ["quotes"], log=said.append)  # nothing missing: nothing rebuilt
    assert len(said) == 1
