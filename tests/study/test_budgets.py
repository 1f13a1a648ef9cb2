"""ablate/study/budgets.py: what a target is to the seed (seed.knows), the kind of target it makes."""

from __future__ import annotations


def test_target_kinds_follow_what_the_seed_knows(tmp_path):
    """covered | seed-known | eval-only: a trained seed knows its own domains, an imported one general text,
    and `seed.knows` overrides both."""
    from ablate.study.budgets import seed_known, target_kind

    from conftest import tiny_config

    names = ["fortunes", "riddles", "licenses"]
    cfg = tiny_config(tmp_path)  # seed on riddles, units on fortunes and literature
    known = seed_known(cfg, names)
    assert known == {"riddles"}
    assert [target_kind(n, cfg.units.domains, known) for n in names] == ["covered", "seed-known", "eval-only"]
    imported = tiny_config(tmp_path, seed={"mode": "import", "import_path": str(tmp_path)})
    assert seed_known(imported, names) == {"riddles", "licenses"}
    told = tiny_config(tmp_path, **{"seed.knows": ["licenses"]})
    assert seed_known(told, names) == {"licenses"}
    assert seed_known(tiny_config(tmp_path, **{"seed.knows": []}), names) == frozenset()
