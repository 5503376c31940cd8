"""Configs from dicts, once: unknown keys are errors that name them and the known ones.

Every config of the engine comes from a JSON object at some point (`--config`, a checkpoint,
tiny-cuda-nn style network and encoding dicts). `dataclass_from_dict` builds a config
dataclass from one; `check_keys` is the same check for configs that are plain dicts. Errors
are ValueErrors that read

    NerfConfig: unknown key 'learning_rate' (did you mean 'lr'?); known keys: lr, ...

so that a user knows which key was wrong, where, and what would have been right. Values are
checked against the fields' annotations (`check_value`) the same way:

    Strategy: field 'n_collocation': expected an int, got str 'lots'
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of `choices` to `word`, or ''."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key_error(where: str, unknown: Iterable[str], known: Iterable[str]) -> ValueError:
    """The error for `unknown` keys of a config at `where` (a class name, a file, a field)
    whose keys are `known` (in the order a reader should see them)."""
    known = list(known)
    names = [f"{k!r}{did_you_mean(k, known)}" for k in unknown]
    noun = "key" if len(names) == 1 else "keys"
    return ValueError(f"{where}: unknown {noun} {', '.join(names)}; known keys: "
                      f"{', '.join(known)}")


def check_keys(where: str, d: Mapping[str, Any], known: Iterable[str]) -> None:
    """Raises `unknown_key_error` when `d` has keys outside `known`; also when `d` is no
    mapping (a JSON array or number where an object was expected)."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a JSON object (a dict of keys), got "
                         f"{type(d).__name__}")
    known = list(known)
    allowed = set(known)
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise unknown_key_error(where, unknown, known)


def dataclass_from_dict(cls: type[T], d: Mapping[str, Any], where: str | None = None) -> T:
    """The dataclass `cls` built from `d`: keys are its fields (defaults fill the rest).

    Raises ValueError naming `where` (default: the class name) when `d` is no mapping, has
    keys that are not fields of `cls` (with the closest field, and all of them), lacks a
    field without a default, or has a value of the wrong type for its field's annotation
    (`check_value`: ``NerfConfig: field 'lr': expected a finite number, got str 'fast'``).
    Checks of the values beyond their types are `cls`'s own (its `__post_init__`); a
    TypeError or OverflowError it raises is reported as a ValueError naming `where`."""
    where = where or cls.__name__
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"dataclass_from_dict: {cls!r} is not a dataclass")
    fields = [f for f in dataclasses.fields(cls) if f.init]
    check_keys(where, d, [f.name for f in fields])
    missing = [f.name for f in fields if f.name not in d
               and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where}: missing {'key' if len(missing) == 1 else 'keys'} "
                         f"{', '.join(map(repr, missing))}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: leave the values unchecked
        hints = {}
    values = {k: check_value(where, k, hints[k], v) if k in hints else v for k, v in d.items()}
    try:
        return cls(**values)
    except (TypeError, OverflowError) as e:
        raise ValueError(f"{where}: {e}") from e


#: the largest magnitude an int field accepts: what a 64-bit integer (torch, numpy) holds
INT_LIMIT = 2**63 - 1


def require_positive(where: str, obj: Any, names: Iterable[str]) -> None:
    """ValueError ``"<where>: field 'lr' must be > 0, got -1"`` for the first of the fields
    `names` of `obj` that is not a positive number (learning rates, sizes, counts)."""
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ValueError(f"{where}: field {name!r} must be > 0, got {value!r}")


def check_value(where: str, name: str, hint: Any, value: Any) -> Any:
    """`value` of the config field `name` checked against its annotation `hint`.

    Understood: ``int`` (an integer within +-`INT_LIMIT`; a float with an integral value, as
    JSON may write ``1e3``, becomes an int), ``float`` (any finite number, as float: NaN and
    infinities are refused), ``bool`` (true / false only, not 0 / 1), ``str``, ``None``,
    unions of these (``float | None``), ``dict[...]`` / ``Mapping`` (a JSON object),
    ``list[...]`` / ``tuple[...]`` (a JSON array), ``Literal[...]`` and ``Any``; other
    annotations are not checked. numpy scalars count as the Python numbers and bools they
    hold. Returns the value (converted as said); raises ValueError
    ``"<where>: field '<name>': expected an int, got str 'lots'"``."""
    ok, converted = _conforms(hint, value)
    if ok:
        return converted
    huge = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and abs(value) > INT_LIMIT)
    takes_int = hint is int or int in typing.get_args(hint)
    limit = " (integers are limited to 2**63 - 1 in magnitude)" if huge and takes_int else ""
    raise ValueError(f"{where}: field {name!r}: expected {_describe(hint)}, got "
                     f"{_got(value)}{limit}")


def _conforms(hint: Any, value: Any) -> tuple[bool, Any]:
    """(whether `value` fits `hint`, the value converted to it)."""
    if hint is Any:
        return True, value
    if hint is None or hint is type(None):
        return value is None, value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            ok, converted = _conforms(arm, value)
            if ok:
                return True, converted
        return False, value
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint)), value
    is_bool = isinstance(value, (bool, np.bool_))
    if hint is bool:
        return is_bool, bool(value) if is_bool else value
    if hint is int:
        if is_bool:
            return False, value
        if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
            f = float(value)
            if not (math.isfinite(f) and f.is_integer()):
                return False, value
            value = int(f)
        ok = isinstance(value, numbers.Integral) and abs(int(value)) <= INT_LIMIT
        return ok, int(value) if ok else value
    if hint is float:
        if is_bool or not isinstance(value, numbers.Real):
            return False, value
        try:
            f = float(value)
        except OverflowError:
            return False, value
        return math.isfinite(f), f
    if hint is str:
        return isinstance(value, str), value
    base = origin or hint
    if isinstance(base, type):
        if issubclass(base, Mapping) or base is dict:
            return isinstance(value, Mapping), value
        if base in (list, tuple):
            return isinstance(value, (list, tuple)), value
    return True, value  # an annotation this check does not know


def _describe(hint: Any) -> str:
    """`hint` in words: ``an int``, ``a finite number or null``."""
    if hint is Any:
        return "any value"
    if hint is None or hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    names = {bool: "a bool (true or false)", int: "an int",
             float: "a finite number", str: "a string"}
    if hint in names:
        return names[hint]
    base = origin or hint
    if isinstance(base, type) and (issubclass(base, Mapping) or base is dict):
        return "a JSON object (dict)"
    if base in (list, tuple):
        return "a JSON array (list)"
    return str(hint)


def _got(value: Any) -> str:
    """``str 'lots'``: a value's type and (shortened) repr for an error message."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
