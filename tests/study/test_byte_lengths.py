"""ablate/study/context.py byte_lengths: a study's token byte lengths, read once per process and tokenizer."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from ablate.data.units import load_tokenizer, study_tokenizer, token_byte_lengths
from ablate.study.context import byte_lengths


def test_byte_lengths_are_read_once_and_again_when_the_tokenizer_changes(study, tmp_path):
    _, pool, _, _ = study
    tok_dir, _ = study_tokenizer(pool)
    first = byte_lengths(tok_dir)
    assert byte_lengths(tok_dir) is first  # the same array: no second load
    assert np.array_equal(first, token_byte_lengths(load_tokenizer(tok_dir)))
    with pytest.raises(ValueError):
        first[0] = 99  # shared by every study of the process: read-only
    copy = tmp_path / "tok"
    shutil.copytree(tok_dir, copy)
    before = byte_lengths(copy)
    stat = (copy / "tokenizer.json").stat()
    os.utime(copy / "tokenizer.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # staged again
    assert byte_lengths(copy) is not before and np.array_equal(byte_lengths(copy), before)
