"""How reports write numbers: n/a for what is missing, fixed or significant digits, percentages, yes/no.

How to run: not directly; the fidelity reports, the CLI and the workflows format their numbers here, so a
number reads the same in every report:
    fmt(0.1234, 2, pct=True) == "12.34 %"; num(1234.5) == "1234"; rel(math.log(1.05)) == "+5.00 %"
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


def rel(log_ratio: float) -> str:
    """A change in log space written as a relative change (log(1.05) -> "+5.00 %")."""
    return signed_pct(math.exp(log_ratio) - 1)
