"""Debian text extractors: each domain of a Debian-built corpus, as (origin, locator, text).

This module only reads installed Debian packages and turns them into clean documents;
ablate.data.corpus writes them to disk (build_debian_corpus) and loads them back.

How to run:

    apt-get install -y --no-install-recommends bible-kjv dict-gcide dict-foldoc \\
        dict-jargon fortunes r-cran-janeaustenr python3-doc
    python -m ablate.data.corpus data/debian           # build every default domain

    from ablate.data.debian import DEBIAN_DOMAINS
    docs = DEBIAN_DOMAINS["bible"].extract({"cache_dir": "/tmp/ablate"})  # lazy iterator
"""
from __future__ import annotations

import functools
import glob
import gzip
import hashlib
import itertools
import os
import re
import shutil
import subprocess
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ablate.core.errors import AblateError
from ablate.store.pool import atomic_write_bytes

Doc = tuple[str, str, str]  # (origin, locator, text); source = "origin#locator"
DICTD = Path("/usr/share/dictd")
FORTUNES = Path("/usr/share/games/fortunes")


def _run(cmd: list[str], what: str, env: dict | None = None) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, env=env, check=False)
    except OSError as e:
        raise AblateError(f"cannot run {cmd[0]} for {what}: {e.strerror}") from None
    if res.returncode != 0:
        last = (res.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise AblateError(f"{cmd[0]} failed for {what} (exit {res.returncode}): {last}")
    return res.stdout.decode("utf-8", errors="replace")


def _paragraphs(lines: Iterable[str]) -> str:
    """Re-flow hard-wrapped text: one line per paragraph, paragraphs split by a blank line."""
    paras = re.split(r"\n\s*\n", "\n".join(lines).strip())
    return "\n\n".join(" ".join(p.split()) for p in paras if p.strip())


# ---- fiction: Jane Austen's six novels, one doc per chapter ----------------------------
_AUSTEN = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey",
           "persuasion")
_CHAPTER = re.compile(r"(CHAPTER|Chapter) ([0-9]+|[IVXLC]+)\.?")
_FRONT = re.compile(r"(VOLUME [IVX]+|THE END|FINIS)\.?")  # volume breaks and end marks


def _fiction(ctx: dict) -> Iterator[Doc]:
    script = ("library(janeaustenr); for (b in c(%s)) { cat('@@BOOK ', b, '\\n', sep=''); "
              "writeLines(get(b)) }" % ",".join(f"'{b}'" for b in _AUSTEN))
    text = _run(["Rscript", "--vanilla", "-e", script], "domain 'fiction'",
                env={**os.environ, "LC_ALL": "C.UTF-8"})
    for block in text.split("@@BOOK ")[1:]:
        book, _, body = block.partition("\n")
        title, lines = None, []
        for line in body.splitlines() + ["CHAPTER 0"]:  # sentinel flushes the last chapter
            if _CHAPTER.fullmatch(line.strip()):
                if title and lines:  # text before the first chapter is the title page
                    yield f"janeaustenr::{book}", title, f"{title}\n\n{_paragraphs(lines)}"
                title, lines = line.strip(), []
            elif not _FRONT.fullmatch(line.strip()):
                lines.append(line)


# ---- bible: King James Version, one doc per chapter ------------------------------------
def _bible(ctx: dict) -> Iterator[Doc]:
    # -l: a huge line width stops the CLI from hard-wrapping verses at $COLUMNS
    text = _run(["bible", "-l1000000", "Gen1:1-Rev22:21"], "domain 'bible'")
    for chunk in re.split(r"\n\n(?=\S)", text.strip()):
        head, _, verses = chunk.partition("\n")
        body = "\n".join(v.strip() for v in verses.splitlines() if v.strip())
        if body:
            yield "bible-kjv", head.strip(), f"{head.strip()}\n\n{body}"


# ---- dictd dictionaries: webster (GCIDE) and computing (FOLDOC + Jargon) ---------------
_B64 = {c: i for i, c in enumerate(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64(s: str) -> int:
    """dictd's index numbers: base64 digits, most significant first, no padding."""
    return functools.reduce(lambda n, c: n * 64 + _B64[c], s, 0)


def _dictd_entries(name: str) -> Iterator[tuple[str, str]]:
    """(origin, raw entry) in file order. The index is sorted by headword and several
    headwords may share one entry, so unique (offset, length) spans sorted by offset
    give each entry once, in the order of the printed dictionary."""
    dz, index = DICTD / f"{name}.dict.dz", DICTD / f"{name}.index"
    data = gzip.open(dz).read()
    spans = set()
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and not parts[0].startswith("00-"):  # 00-database-*: metadata
            spans.add((_b64(parts[1]), _b64(parts[2])))
    for off, length in sorted(spans):
        raw = data[off:off + length]
        try:
            yield str(dz), raw.decode("utf-8")
        except UnicodeDecodeError:  # a handful of GCIDE entries carry cp1252 quotes
            yield str(dz), raw.decode("cp1252", errors="replace")


# GCIDE writes accents as bracket escapes: [=a] macron, ['e] acute, [u^] breve, ...
_MARKS = {"=": "\u0304", "-": "\u0304", "'": "\u0301", "`": "\u0300", '"': "\u0308",
          "~": "\u0303", ",": "\u0327", ".": "\u0307", "^": "\u0302", "*": "\u0307"}
_NAMED = {"ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "th": "þ", "thorn": "þ",
          "deg": "°", "root": "√", "sect": "§", "ng": "ŋ", "yogh": "ȝ", "aum": "ä",
          "imac": "ī", "amac": "ā", "emac": "ē", "omac": "ō", "umac": "ū", "asl": "a",
          "add": "a", "udd": "u", "pounds": "£", "times": "×", "middot": "·", "para": "¶",
          "dagger": "†", "dag": "†", "div": "÷", "ldqo": "“", "rdqo": "”", "rsquo": "’",
          "rarr": "→", "flat": "♭", "sharp": "♯", "hand": "☞", "nbsp": " ", "breve": "˘",
          "ccaron": "č", "cacute": "ć"}
_ESCAPE = re.compile(r"\[([=\-'`\"~,.^*]?)([A-Za-z]{1,7})(\^?)\]")
_SOURCE_TAG = (r"\[(?:[^\]\n]*(?:Webster|WordNet|Century Dict)[^\]\n]*"
               r"|\+?PJC\.?|AS|RDH|RHUD|MI11|wn1)\]")


def _gcide_char(m: re.Match) -> str:
    mark, letters, breve = m.groups()
    if not mark and not breve:
        if letters in _NAMED:
            return _NAMED[letters]
        try:  # [alpha], [beta], ...
            return unicodedata.lookup(f"GREEK SMALL LETTER {letters.upper()}")
        except KeyError:
            return m.group(0)  # an ordinary bracket, e.g. [Obs.] or [He]
    if len(letters) > 2:
        return m.group(0)
    combining = "\u0306" if breve else _MARKS[mark]
    return unicodedata.normalize("NFC", "".join(c + combining for c in letters))


def _clean_gcide(entry: str) -> str:
    # spill-over of the unindexed front matter sits in indented lines before the headword
    entry = re.sub(r"^(?:[ \t]*\n|[ \t]+\S[^\n]*\n)+", "", entry)
    # "\A*bun"dance\ ([.a]*b[u^]n"dans)": the headword again with syllable and stress marks
    entry = re.sub(r"[ \t]*\\[^\\\n]+\\(?:[ \t]*\([^()\n]*[*\"\[][^()\n]*\))?", "", entry)
    entry = re.sub(rf"(?m)^[ \t]*{_SOURCE_TAG}[ \t]*\n?", "", entry)
    entry = re.sub(rf"[ \t]*{_SOURCE_TAG}", "", entry)
    entry = _ESCAPE.sub(_gcide_char, entry)
    entry = re.sub(r"</?[A-Za-z][^<>\n]*>", "", entry)  # XML tags, should any survive
    return _clean_dictd(entry)


def _clean_dictd(entry: str) -> str:
    entry = re.sub(r"\{([^{}]*)\}", r"\1", entry)  # {cross reference} -> cross reference
    entry = re.sub(r"(?m)^[ \t]*\(\d{4}-\d\d-\d\d\)[ \t]*$", "", entry)  # FOLDOC edit dates
    head, _, body = entry.strip("\n").partition("\n")
    # dedent by the usual indent (3 in FOLDOC, 4 in Jargon); a few lines sit at column 0
    indents = [len(ln) - len(ln.lstrip(" ")) for ln in body.splitlines() if ln.strip()]
    n = max(set(indents), key=indents.count) if indents else 0
    body = "\n".join(re.sub(f"^ {{0,{n}}}", "", ln) for ln in body.splitlines())
    text = head.strip() + "\n" + body
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _dictd_docs(name: str, clean: Callable[[str], str]) -> Iterator[Doc]:
    for origin, raw in _dictd_entries(name):
        text = clean(raw)
        if text:
            yield origin, text.partition("\n")[0][:80], text


# ---- pydocs: the Python documentation sources, one doc per section ---------------------
_UNDERLINE = re.compile(r"([=\-~^\"*#+`':.<>_])\1{2,}")
_DROP = {"module", "moduleauthor", "sectionauthor", "index", "highlight", "toctree",
         "testsetup", "testcleanup", "currentmodule", "tabularcolumns", "raw", "only",
         "include", "literalinclude", "image", "figure", "audit-event", "productionlist"}
_LABEL = {"versionadded": "New in version {}.", "versionchanged": "Changed in version {}:",
          "deprecated": "Deprecated since version {}.", "note": "Note:", "warning": "Warning:",
          "seealso": "See also:", "impl-detail": "CPython implementation detail:"}
_DIRECTIVE = re.compile(r"(\s*)\.\.(?:\s+([\w:-]+)::\s*(.*)|\s.*)?")


def _pydocs_root() -> Path | None:
    # python3, python3-doc, python3.11-doc, ... are symlinks to one folder; take the newest
    roots = {Path(p).resolve() for p in glob.glob("/usr/share/doc/python3*/html/_sources")}
    roots = [r for r in roots if re.fullmatch(r"python3(\.\d+)?", r.parent.parent.name)]
    key = lambda r: [int(x) for x in re.findall(r"\d+", r.parent.parent.name)]  # noqa: E731
    return max(roots, key=key) if roots else None


def _rst_clean(lines: list[str]) -> str:
    out, skip_indent, options = [], None, False
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None and (not line.strip() or indent > skip_indent):
            continue  # inside a dropped directive or comment block
        skip_indent = None
        if options and re.fullmatch(r"\s+:[\w-]+:.*", line):
            continue  # directive options such as :noindex: or :type:
        options = False
        m = _DIRECTIVE.fullmatch(line)
        if m:
            name, arg = m.group(2), (m.group(3) or "").strip()
            label = _LABEL.get(name, "{}")
            if name is None or name in _DROP:  # comment, target, or metadata directive
                skip_indent = indent
            elif "{}" in label or arg:  # signature of a function/class/..., or a label
                text = label.format(arg) if "{}" in label else f"{label} {arg}"
                if text.strip():
                    out.append(m.group(1) + text)
            else:
                out.append(m.group(1) + label)
            options = True
            continue
        if _UNDERLINE.fullmatch(line.strip()) or line.strip() == "::" or re.fullmatch(
                r":(orphan|tocdepth|nosearch)(:.*)?", line):
            continue  # transitions and page metadata
        out.append(line.rstrip())
    text = "\n".join(out)
    text = re.sub(r":[\w:.+-]+:`[!~.]*([^`<]*?)\s*(?:<[^`>]*>)?`", r"\1", text)  # roles
    text = re.sub(r"`([^`<]+?)\s*(?:<[^`>]*>)?`__?", r"\1", text)  # hyperlinks
    text = re.sub(r"``(.+?)``", r"\1", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    text = re.sub(r"::$", ":", text, flags=re.M)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _rst_sections(text: str) -> Iterator[tuple[str, list[str]]]:
    """(title, body lines) per section: a title is underlined, or over- and underlined."""
    lines, title, body, i = text.splitlines() + ["", ""], "", [], 0
    while i < len(lines) - 2:
        line, nxt, nxt2 = lines[i:i + 3]
        over = _UNDERLINE.fullmatch(line) and nxt.strip() and nxt2 == line
        under = (line[:1].strip() and _UNDERLINE.fullmatch(nxt) and not _UNDERLINE.fullmatch(line)
                 and len(nxt) >= len(line.strip()))
        if over or under:
            yield title, body
            title, body = (nxt if over else line).strip(), []
            i += 3 if over else 2
            continue
        body.append(line)
        i += 1
    yield title, body


def _pydocs(ctx: dict) -> Iterator[Doc]:
    root = _pydocs_root()
    for path in sorted(root.rglob("*.rst.txt"), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).as_posix()
        for title, body in _rst_sections(path.read_text(encoding="utf-8", errors="replace")):
            text, title = _rst_clean(body), _rst_clean([title])
            if text:
                yield str(root), f"{rel}#{title}", f"{title}\n\n{text}" if title else text


# ---- quotes: fortune cookies, one doc per fortune --------------------------------------
def fortune_docs(path: Path) -> Iterator[Doc]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = re.sub(r".\x08", "", text)  # nroff-style overstrike (bold/underline) in a few files
    for i, doc in enumerate(re.split(r"(?m)^%[ \t]*$", text)):
        doc = "\n".join(line.rstrip() for line in doc.strip("\n").splitlines()).strip("\n")
        if doc.strip():
            yield str(path), str(i), doc


def _quotes(ctx: dict) -> Iterator[Doc]:
    # no dot in the name: skips *.dat, *.u8 and the Portuguese mario.*; dirs such as off/
    for path in sorted(p for p in FORTUNES.iterdir() if p.is_file() and "." not in p.name):
        yield from fortune_docs(path)


# ---- manpages (optional, slow): rendered with man and cached ---------------------------
def _render_man(page: str, cache: Path) -> str:
    st = os.stat(page)
    key = hashlib.sha256(f"{page}\0{st.st_mtime_ns}\0{st.st_size}\0w80".encode()).hexdigest()
    hit = cache / f"{key}.txt"
    if hit.exists():
        return hit.read_text(encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80", "MAN_KEEP_FORMATTING": ""}
    text = _run(["sh", "-c", 'man --nj --nh -l "$1" 2>/dev/null | col -bx', "sh", page],
                f"man page {page}", env=env)
    lines = text.strip("\n").splitlines()[1:-1]  # drop the running header and footer
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in lines)).strip("\n")
    atomic_write_bytes(hit, text.encode("utf-8"))
    return text


def _man_page_files() -> list[str]:
    listed = _run(["dpkg-query", "-L", "manpages", "manpages-dev"], "domain 'manpages'")
    # symlinks and ".so man3/x.3" stubs are aliases that would render as duplicate pages
    return sorted(p for p in listed.splitlines() if re.match(r"/usr/share/man/man\w+/.+\.gz$", p)
                  and os.path.isfile(p) and not os.path.islink(p)
                  and gzip.open(p).read(4) != b".so ")


def _manpages(ctx: dict) -> Iterator[Doc]:
    from ablate.core.progress import bar

    pages = _man_page_files()
    cache = Path(ctx["cache_dir"]) / "manpages"
    cache.mkdir(parents=True, exist_ok=True)
    # rendering ~3,000 pages takes about a minute the first time (cached after): show it moving
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool, \
            bar("manpages: rendering", len(pages), fields={"page": "-"}) as update:
        for page, text in zip(pages, pool.map(lambda p: _render_man(p, cache), pages)):
            update(1, page=Path(page).name)
            if text.strip():
                yield "/usr/share/man", page.removeprefix("/usr/share/man/"), text


@dataclass(frozen=True)
class DomainSpec:
    """How a domain is extracted. `needs` pairs each Debian package with a probe (a path
    glob or a command) whose absence means the package is missing."""
    about: str
    needs: tuple[tuple[str, str], ...]
    extract: Callable[[dict], Iterable[Doc]]
    default: bool = True


DEBIAN_DOMAINS: dict[str, DomainSpec] = {
    "fiction": DomainSpec("Jane Austen's novels (janeaustenr), one doc per chapter",
                          (("r-cran-janeaustenr", "/usr/lib/R/*library/janeaustenr"),),
                          _fiction),
    "bible": DomainSpec("King James Bible via the `bible` CLI, one doc per chapter",
                        (("bible-kjv", "bible"),), _bible),
    "webster": DomainSpec("GCIDE (Webster 1913), one doc per entry, capped",
                          (("dict-gcide", str(DICTD / "gcide.index")),),
                          lambda ctx: _dictd_docs("gcide", _clean_gcide)),
    "computing": DomainSpec("FOLDOC + Jargon File, one doc per entry",
                            (("dict-foldoc", str(DICTD / "foldoc.index")),
                             ("dict-jargon", str(DICTD / "jargon.index"))),
                            lambda ctx: itertools.chain(_dictd_docs("foldoc", _clean_dictd),
                                                        _dictd_docs("jargon", _clean_dictd))),
    "pydocs": DomainSpec("Python docs reST sources, one doc per section",
                         (("python3-doc", "/usr/share/doc/python3.*/html/_sources"),), _pydocs),
    "quotes": DomainSpec("fortune cookies, one doc per fortune",
                         (("fortunes", str(FORTUNES / "people")),
                          ("fortunes-min", str(FORTUNES / "fortunes"))), _quotes),
    "manpages": DomainSpec("manpages + manpages-dev rendered by man, one doc per page",
                           (("manpages", "/usr/share/man/man7/man-pages.7.gz"),
                            ("manpages-dev", "/usr/share/man/man2/open.2.gz"),
                            ("man-db", "man"), ("bsdextrautils", "col")), _manpages, False),
}


def _dpkg(packages: list[str]) -> dict[str, str] | None:
    """Installed versions from dpkg-query, or None where dpkg is not there at all."""
    try:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Status}\t${Version}\n",
                              *packages], capture_output=True, text=True, check=False)
    except OSError:
        return None
    rows = [line.split("\t") for line in res.stdout.splitlines()]
    return {r[0]: r[2] for r in rows if len(r) == 3 and r[1].endswith(" installed")}


def require_packages(needs: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """Check every package of every requested domain; one error naming all that lack."""
    pkgs = sorted({p for pairs in needs.values() for p, _ in pairs})
    versions = _dpkg(pkgs)
    missing, lacking = set(), []
    for domain, pairs in needs.items():
        for pkg, probe in pairs:
            present = glob.glob(probe) if probe.startswith("/") else shutil.which(probe)
            if not present or (versions is not None and pkg not in versions):
                missing.add(pkg)
                if domain not in lacking:
                    lacking.append(domain)
    if missing:
        names = ", ".join(f"'{d}'" for d in lacking)
        raise AblateError(f"missing Debian package(s) for domain{'s' * (len(lacking) > 1)} "
                          f"{names}: run `apt-get install -y --no-install-recommends "
                          f"{' '.join(sorted(missing))}`")
    return {p: (versions or {}).get(p, "unknown") for p in pkgs}
