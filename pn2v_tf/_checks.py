"""Small argument checks shared by the modules."""

import numbers


def is_int(value, low=None):
    """True for an integer (not a bool) that is at least ``low`` when given."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return ok and (low is None or value >= low)
