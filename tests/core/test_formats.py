"""The report number formats (ablate/core/formats.py): every report writes a number the same way."""

import math
import random

from ablate.core.formats import fmt, num, num_pct, ratio, rel, rel_band, signed_pct, yes_no


def test_formats_write_numbers_as_the_reports_always_did():
    assert (fmt(0.12345), fmt(0.12345, 2, True), fmt(0.5, 0, True)) == ("0.12", "12.35 %", "50 %")
    assert (num(1234.5), num(0.123456, 3), num(12345.0)) == ("1234", "0.123", "1.234e+04")
    assert (num_pct(0.0423), ratio(12.34), yes_no(True), yes_no(False)) == ("4.2 %", "12x", "yes", "no")
    assert (signed_pct(0.0125), signed_pct(-0.004), rel(math.log(1.05))) == ("+1.25 %", "-0.40 %", "+5.00 %")
    for missing in (None, math.nan):
        assert fmt(missing) == fmt(missing, 1, True) == num(missing) == ratio(missing) == "n/a"
    assert num_pct(None) == yes_no(None) == rel(None) == rel_band(None) == "n/a"
    assert (rel(math.log(0.99)), rel_band(math.log(1.05)), rel_band(math.log(0.95))) == ("-1.00 %", "±5.00 %", "±5.00 %")


def test_rel_with_expm1_writes_what_exp_minus_one_wrote():
    """formats.rel moved from exp(x) - 1 to expm1 (exact for small x): same text for log-perplexity differences
    (exact differences of values in [1, 8), FIDELITY-weights.json's gains); they part only below 1e-16."""
    rng = random.Random(0)
    for _ in range(100_000):
        u = rng.uniform(1, 8)
        x = (u + rng.choice([1e-1, 1e-2, 1e-3, 1e-4, 1e-5]) * rng.uniform(-1, 1)) - u
        assert rel(x) == signed_pct(math.exp(x) - 1)
        assert rel_band(x) == "±" + rel(x)[1:]
