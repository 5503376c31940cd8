"""Configs from dicts, once: unknown keys are errors that name them and the known ones.

Every config of the engine comes from a JSON object at some point (`--config`, a checkpoint,
tiny-cuda-nn style network and encoding dicts). `dataclass_from_dict` builds a config
dataclass from one; `check_keys` is the same check for configs that are plain dicts. Errors
are ValueErrors that read

    NerfConfig: unknown key 'learning_rate' (did you mean 'lr'?); known keys: lr, ...

so that a user knows which key was wrong, where, and what would have been right.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

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
    keys that are not fields of `cls` (with the closest field, and all of them), or lacks a
    field without a default. Checks of the values are `cls`'s own (its `__post_init__`)."""
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
    return cls(**d)
