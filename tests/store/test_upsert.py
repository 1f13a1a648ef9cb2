"""ablate/store/index.py upsert: many rows per statement, the same table as upserting them one by one."""

from __future__ import annotations

from ablate.store.index import ROWS_PER_STATEMENT, Index
from ablate.store.pool import Pool


def _row(i, at, ppl):
    return {"row_id": f"r{i}", "method": "merged", "eval_set": "quotes", "ppl": ppl, "created_at": at}


def _table(index):
    return dict(index.query("SELECT row_id, ppl FROM mixture_perplexity ORDER BY row_id")[1])


def test_a_batch_with_repeated_keys_leaves_what_one_by_one_would(tmp_path):
    index = Index(Pool(tmp_path / "pool"))
    index.upsert("mixture_perplexity", [_row(0, "2026-01-02", 1.0), _row(1, "2026-01-02", 1.0)])
    index.upsert("mixture_perplexity", [
        _row(0, "2026-01-03", 2.0), _row(0, "2026-01-01", 3.0),  # newer, then older: the newer stays
        _row(1, "2026-01-01", 4.0),  # older than the stored row: the stored one stays
        _row(2, "2026-01-05", 5.0), _row(2, "2026-01-05", 6.0),  # a tie: the later row wins
        _row(3, None, 7.0), _row(3, "2026-01-05", 8.0)])  # no created_at never wins against one
    assert _table(index) == {"r0": 2.0, "r1": 1.0, "r2": 6.0, "r3": 7.0}


def test_a_batch_larger_than_one_statement_is_written_whole(tmp_path):
    index = Index(Pool(tmp_path / "pool"))
    rows = [_row(i, "2026-01-01", float(i)) for i in range(2 * ROWS_PER_STATEMENT + 7)]
    index.upsert("mixture_perplexity", rows)
    assert _table(index) == {r["row_id"]: r["ppl"] for r in rows}
