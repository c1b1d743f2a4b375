"""Model sizes in Xinference's written form.

Xinference writes ``model_size_in_billions`` as an int for whole numbers and otherwise as the
number's decimal digits with "_" for the point ("0_5", "1_5", "46_7", "2779_93"), and reads it back
with ``float(value.replace("_", "."))``. So the form keeps every digit of the number: 0.00017 is
"0_00017", never a rounded "0_0002" (rounding is :func:`round_billions`' job, done before, when a
counted size should look like a name's). ``spec.float_to_size`` and parse both write through
:func:`size_form`.
"""
from __future__ import annotations

import math
from decimal import Decimal
from typing import Union


def size_form(billions: float) -> Union[int, str]:
    """Xinference's written form: 7 → 7, 0.5 → "0_5", 1.54 → "1_54", 0.00017 → "0_00017".
    Twelve significant digits are kept (float noise such as 0.30000000000000004 is dropped).
    ValueError for a size that is not a positive number."""
    if isinstance(billions, bool) or not isinstance(billions, (int, float)) or not math.isfinite(billions) \
            or billions <= 0:
        raise ValueError(f"a model size must be a positive number of billions, got {billions!r}")
    if billions >= 1 and abs(billions - round(billions)) < 1e-9:
        return int(round(billions))
    text = format(Decimal(f"{billions:.12g}"), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.replace(".", "_")


def round_billions(billions: float) -> float:
    """A counted size, rounded the way model names are: ≥10B whole, ≥1B one decimal, else one
    significant digit."""
    if billions >= 10:
        return float(round(billions))
    if billions >= 1:
        return round(billions, 1)
    digits = -int(math.floor(math.log10(billions)))
    return round(billions, digits)
