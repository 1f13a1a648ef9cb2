"""How reports write numbers: n/a for what is missing, fixed or significant digits, percentages, yes/no.

How to run: not directly; the fidelity reports, the CLI and the workflows format their numbers here, so a
number reads the same in every report:
    fmt(0.1234, 2, pct=True) == "12.34 %"; num(1234.5) == "1234"; rel(math.log(1.05)) == "+5.00 %"
    rel_band(math.log(1.05)) == "±5.00 %"     # a noise band or an error: no sign, whichever way it went
"""

from __future__ import annotations

import math

NA = "n/a"


def missing(v) -> bool:
    """None or NaN: a number a report writes as n/a."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v, digits: int = 2, pct: bool = False) -> str:
    """Fixed decimals (`pct`: as a percentage, "12.34 %"); n/a when missing."""
    if missing(v):
        return NA
    return f"{100 * v:.{digits}f} %" if pct else f"{v:.{digits}f}"


def num(v, digits: int = 4) -> str:
    """Significant digits, scientific from 1e4 on; n/a when missing."""
    if missing(v):
        return NA
    return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.3e}"


def num_pct(v) -> str:
    """A share as a percentage with 2 significant digits ("4.2 %"); n/a when None."""
    return NA if v is None else f"{num(100 * v, 2)} %"


def ratio(v) -> str:
    """A ratio with its x, or n/a alone (never "n/ax")."""
    text = num(v, 2)
    return text if text == NA else f"{text}x"


def yes_no(v) -> str:
    """yes / no for a truth value; n/a when None."""
    return NA if v is None else ("yes" if v else "no")


def signed_pct(x: float) -> str:
    """A relative change with its sign, 2 decimals ("+1.25 %", "-0.40 %")."""
    return f"{100 * x:+.2f} %"


def rel(log_ratio: float | None) -> str:
    """A change in log space written as a relative change (log(1.05) -> "+5.00 %"); n/a when None.
    expm1, not exp(x) - 1: exact for small changes (the two write the same text for every log-perplexity
    difference, FIDELITY-weights.json's included; they part only below 1e-16, "-0.00 %" vs "+0.00 %")."""
    return NA if log_ratio is None else signed_pct(math.expm1(log_ratio))


def rel_band(log_ratio: float | None) -> str:
    """A band or an error in log space as a relative size with ± and no sign (log(1.05) -> "±5.00 %"); n/a when None."""
    return NA if log_ratio is None else f"±{abs(100 * math.expm1(log_ratio)):.2f} %"
