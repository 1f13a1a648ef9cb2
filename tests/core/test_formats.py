"""The report number formats (ablate/core/formats.py): every report writes a number the same way."""

import math

from ablate.core.formats import fmt, num, num_pct, ratio, rel, signed_pct, yes_no


def test_formats_write_numbers_as_the_reports_always_did():
    assert (fmt(0.12345), fmt(0.12345, 2, True), fmt(0.5, 0, True)) == ("0.12", "12.35 %", "50 %")
    assert (num(1234.5), num(0.123456, 3), num(12345.0)) == ("1234", "0.123", "1.234e+04")
    assert (num_pct(0.0423), ratio(12.34), yes_no(True), yes_no(False)) == ("4.2 %", "12x", "yes", "no")
    assert (signed_pct(0.0125), signed_pct(-0.004), rel(math.log(1.05))) == ("+1.25 %", "-0.40 %", "+5.00 %")
    for missing in (None, math.nan):
        assert fmt(missing) == fmt(missing, 1, True) == num(missing) == ratio(missing) == "n/a"
    assert num_pct(None) == yes_no(None) == "n/a"
