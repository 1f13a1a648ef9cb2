"""verify_hash is honoured by every command that merges members (inplace.merged_model).

`score-mixture` always hashed the members with `verify_hash: true`; `search` and `export-mixture`
built their models on a path that dropped the setting. A member whose file was altered without
changing its size or header passes the cheap checks: only the full hash catches it.
"""

from __future__ import annotations

import json
import shutil
import struct

from conftest import run_cli, write_config


def _alter_in_place(path) -> None:
    """Flip one bit of one float's lowest mantissa byte: same size, valid header, finite values."""
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", bytes(data[:8]))[0]
    json.loads(bytes(data[8:start]))  # a valid safetensors header before and after
    at = start + 4 * ((len(data) - start) // 8)  # a float in the middle, little-endian: byte 0 is mantissa
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_search_and_export_refuse_an_altered_member_when_verify_hash_is_on(study_copy, tmp_path, capsys):
    cfg, pool, _, _ = study_copy
    shutil.rmtree(pool.results_dir, ignore_errors=True)  # no cached rows: every candidate is built
    pool.index_path.unlink(missing_ok=True)
    member = next(m for m in pool.iter_metas("unit") if m["units"] == ["fortunes-01"])
    altered = pool.weights_path(member["model_id"])
    size = altered.stat().st_size
    _alter_in_place(altered)
    assert altered.stat().st_size == size

    cfg.verify_hash = True
    on = write_config(cfg, tmp_path / "on.yaml")
    cfg.verify_hash = False
    off = write_config(cfg, tmp_path / "off.yaml")
    export = ["export-mixture", "fortunes-00", "fortunes-01", "--out"]
    search = ["search", "--target", "fortunes", "--max-size", "2"]

    code, _, err = run_cli([*export, str(tmp_path / "on"), "-c", str(on)], capsys)
    assert code == 1 and str(altered) in err and "sha256" in err
    assert not (tmp_path / "on").exists()
    code, _, err = run_cli([*search, "-c", str(on)], capsys)
    assert code == 1 and str(altered) in err and "sha256" in err

    # the same commands without the setting: the file itself is readable, so the setting is what refused
    code, _, err = run_cli([*export, str(tmp_path / "off"), "-c", str(off)], capsys)
    assert code == 0, err
    code, _, err = run_cli([*search, "-c", str(off)], capsys)
    assert code == 0, err

    # task-sum builds a state dict (the other merged_model path): refused too, its merged rows now cached
    code, _, err = run_cli([*search, "--method", "task-sum", "--truth", "sum", "-c", str(on)], capsys)
    assert code == 1 and str(altered) in err and "sha256" in err
