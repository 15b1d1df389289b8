"""Argument checks, shared by every role.

Each check returns the value (converted to its plain Python type) or raises a one-line
``ArgumentError`` that names the argument and says what was expected, so a bad
hyperparameter fails at construction, not deep inside torch. ``ArgumentError`` is both a
``ValueError`` and a ``TypeError``: callers catch either, whether the value or its type
was wrong. Integral arguments accept
whole-number floats (rlpyt configs write ``replay_size=1e6``); NaN and infinities are
never accepted as numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


class ArgumentError(ValueError, TypeError):
    """A bad argument: the message names it and what was expected."""


class NonFiniteError(RuntimeError):
    """A NaN or infinite value where training needs finite ones (``tdrl.utils.finite``)."""


def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an int within ``[minimum, maximum]`` (either bound may be None).

    Accepts ints, NumPy integers and whole-number floats (``1e6``); refuses bools.
    """
    number: int | None = None
    if (isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)) or (
        isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value)
    ):
        number = int(value)
    if (
        number is None
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        if minimum is not None and maximum is not None:
            expected = f"an int in [{minimum}, {maximum}]"
        elif minimum in (0, 1):
            expected = "a positive int" if minimum == 1 else "a non-negative int"
        elif minimum is not None:
            expected = f"an int >= {minimum}"
        elif maximum is not None:
            expected = f"an int <= {maximum}"
        else:
            expected = "an int"
        raise ArgumentError(f"{name} must be {expected}, got {value!r}")
    return number


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum`` (default 1)."""
    return check_int(name, value, minimum=minimum)


def check_range(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a finite float in ``[low, high]`` (refuses NaN, infinities and bools)."""
    ok = (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
        and low <= value <= high
    )
    if not ok:
        raise ArgumentError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")
    return float(value)


def check_optional_range(name: str, value: Any, low: float, high: float) -> float | None:
    """``None``, or ``check_range(name, value, low, high)``."""
    return None if value is None else check_range(name, value, low, high)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool (NumPy's included)."""
    if not isinstance(value, bool | np.bool_):
        raise ArgumentError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: T, choices: Collection[T]) -> T:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ArgumentError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_instance(name: str, value: T, kind: Any) -> T:
    """``value`` if it is an instance of ``kind`` (a class or a runtime-checkable protocol).

    A class given where its instance belongs (``agent=CategoricalPgAgent``) is named as such.
    """
    if isinstance(value, type) or not isinstance(value, kind):
        what = f"the class {value.__name__}" if isinstance(value, type) else type(value).__name__
        raise ArgumentError(f"{name} must be an instance of {kind.__name__}, got {what}")
    return value


def check_callable(name: str, value: T) -> T:
    """``value`` if it can be called."""
    if not callable(value):
        raise ArgumentError(f"{name} must be callable, got {value!r}")
    return value


def check_mapping(name: str, value: Any) -> dict[str, Any]:
    """A copy of ``value`` as a dict (``None`` gives ``{}``) if it is a mapping."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentError(f"{name} must be a dict, got {type(value).__name__}")
    return dict(value)


def check_all(name: str, values: Any, check: Callable[[str, Any], T]) -> list[T]:
    """``check`` applied to every item of a sequence, each named ``name[i]``."""
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise ArgumentError(f"{name} must be a sequence, got {values!r}")
    return [check(f"{name}[{i}]", v) for i, v in enumerate(values)]


def check_int_list(name: str, values: Any, minimum: int | None = None) -> list[int]:
    """Every item of a sequence as an int ``>= minimum``, each named ``name[i]``."""
    return check_all(name, values, lambda n, v: check_int(n, v, minimum=minimum))
