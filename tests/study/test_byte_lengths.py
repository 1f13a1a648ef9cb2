"""ablate/study/context.py byte_lengths: a study's token byte lengths, read once per process and tokenizer id."""

from __future__ import annotations

import numpy as np
import pytest

from ablate.data.units import load_tokenizer, study_tokenizer, token_byte_lengths
from ablate.study.context import byte_lengths, load_study


def test_byte_lengths_are_read_once_and_again_for_another_tokenizer(study):
    cfg, pool, _, _ = study
    tok_dir, tok_id = study_tokenizer(pool)
    first = byte_lengths(tok_dir, tok_id)
    assert byte_lengths(tok_dir, tok_id) is first  # the same array: no second load
    assert load_study(cfg, pool).byte_len is first  # what every study of the process reads
    assert np.array_equal(first, token_byte_lengths(load_tokenizer(tok_dir)))
    with pytest.raises(ValueError):
        first[0] = 99  # shared by every study of the process: read-only
    again = byte_lengths(tok_dir, "tok-staged-again")  # `units split --force` with another tokenizer: its own id
    assert again is not first and np.array_equal(again, first)
