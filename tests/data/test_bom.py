"""A leading UTF-8 byte-order mark (Windows editors write one) is dropped by every reader of a user's file: corpus
JSONL / JSON / text, an eval file, a multiple-choice and a cloze task file, a study config, a mixtures file."""

from __future__ import annotations

import json

from ablate.core.config import load_config
from ablate.core.sections import EvalFileConfig
from ablate.data.corpus import load_corpus, read_documents
from ablate.data.tasks import read_task_file
from ablate.scoring.mixtures import read_mixtures

BOM = b"\xef\xbb\xbf"


def _bom(path, text: str):
    path.write_bytes(BOM + text.encode("utf-8"))
    return path


def test_a_leading_byte_order_mark_is_dropped_by_every_reader(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _bom(corpus / "a.jsonl", '{"text": "first line", "domain": "x"}\n')
    _bom(corpus / "b.json", json.dumps([{"text": "an array", "domain": "y"}]))
    _bom(corpus / "poems.txt", "Roses are red.\n\nSecond one.\n")
    assert load_corpus(corpus) == {"poems": ["Roses are red.", "Second one."], "x": ["first line"],
                                   "y": ["an array"]}
    assert read_documents(corpus / "a.jsonl") == ["first line"]
    # a mark inside the text is text: only the leading one goes
    _bom(corpus / "a.jsonl", '{"text": "mid\\ufeffdle", "domain": "x"}\n')
    assert read_documents(corpus / "a.jsonl") == ["mid\ufeffdle"]

    choice = _bom(tmp_path / "task.jsonl", '{"context": "The sky is", "choices": [" blue", " green"], "answer": 0}\n')
    examples, sha = read_task_file("t", EvalFileConfig(path=str(choice), kind="choice"))
    assert examples[0].context == "The sky is"
    import hashlib
    assert sha == hashlib.sha256(choice.read_bytes()).hexdigest()  # the file's hash is of its bytes, mark and all
    cloze = _bom(tmp_path / "cloze.txt", "The sky is\t blue\n")
    examples, _ = read_task_file("c", EvalFileConfig(path=str(cloze), kind="cloze"))
    assert examples[0].context == "The sky is"

    cfg = load_config(_bom(tmp_path / "study.yaml", "name: bom-study\n"))
    assert cfg.name == "bom-study"
    entries = read_mixtures(_bom(tmp_path / "mixtures.txt", "u1 u2\n"), ["u1", "u2"])
    assert [e.units for e in entries] == [("u1", "u2")]
