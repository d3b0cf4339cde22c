"""Small argument checks shared by the modules."""

import math
import numbers

#: Keras dtype policies of the U-Net body (``PN2VConfig.unet_dtype_policy``); everything else is float32.
DTYPE_POLICIES = ("float32", "mixed_bfloat16")


def is_int(value, low=None):
    """True for an integer (not a bool) that is at least ``low`` when given."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return ok and (low is None or value >= low)


def is_number(value, low=None, low_inclusive=True):
    """True for a finite real number (not a bool) that is at least (or above) ``low`` when given."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or low is None:
        return ok
    return value >= low if low_inclusive else value > low
