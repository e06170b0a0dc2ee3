"""The one check of every settings field, driven by its type hint and the rules in its
``metadata`` (a range, a list of choices): ``settle`` in a dataclass's ``__post_init__``, ``build``
for a TOML table. Kept apart from ``tokentop.config``, which says what the settings are."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from itertools import pairwise
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

MAX_TEXT_CHARS = 200
"""Longest name or key accepted (the bound ``tokentop.text`` puts on outside text)."""
MAX_URL_CHARS = 2048


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it (``key``) and says why."""

    def __init__(self, problem: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.problem = problem
        self.key = key

    def under(self, prefix: str) -> ConfigError:
        """The same error for a setting inside the table or list entry ``prefix``."""
        return ConfigError(self.problem, f"{prefix}.{self.key}" if self.key else prefix)


@dataclass(frozen=True)
class Bounds:
    """Where a number setting may lie; an ``*_open`` end is excluded."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above_low = value > self.low if self.low_open else value >= self.low
        below_high = value < self.high if self.high_open else value <= self.high
        return above_low and below_high

    def __str__(self) -> str:
        low = f"above {self.low:g}" if self.low_open else f"at least {self.low:g}"
        if self.high == math.inf:
            return low
        high = f"below {self.high:g}" if self.high_open else f"at most {self.high:g}"
        if not (self.low_open or self.high_open):
            return f"between {self.low:g} and {self.high:g}"
        return f"{low} and {high}"


def in_range(
    low: float = -math.inf, high: float = math.inf, *, low_open: bool = False, high_open: bool = False
) -> dict:
    return {"bounds": Bounds(low, high, low_open, high_open)}


@dataclass(frozen=True)
class Pattern:
    """What a text setting must look like: a regular expression, and the words for it."""

    regex: re.Pattern[str]
    what: str


ENVIRONMENT_NAME = {"pattern": Pattern(re.compile(r"[A-Za-z_][A-Za-z0-9_]*"), "an environment variable's name")}
"""The rule of a ``token_env``: a name a shell can export (letters, digits, ``_``; no digit first)."""


def one_of(*allowed: str) -> dict:
    return {"choices": allowed}


_HINTS: dict[type, dict[str, Any]] = {}  # resolved once per settings class


def settle(instance: Any) -> None:
    """Check every field of a settings dataclass and store its normal form (a list becomes a
    tuple, a table a dataclass, an integer a float where a float is meant)."""
    cls = type(instance)
    hints = _HINTS.get(cls) or _HINTS.setdefault(cls, get_type_hints(cls, include_extras=True))
    for f in fields(instance):
        value = _convert(getattr(instance, f.name), hints[f.name], f.name, f.metadata)
        object.__setattr__(instance, f.name, value)


def build(cls: Any, value: object, key: str) -> Any:
    """A settings dataclass from a TOML table; errors name the setting under ``key``."""
    if isinstance(value, cls):
        return value
    table = _expect(value, dict, "a table", key)
    known = [f.name for f in fields(cls) if f.init]
    unknown = [name for name in table if name not in known]
    if unknown:
        raise ConfigError(f"setting {unknown[0]!r} not understood; known: {', '.join(known)}", key or None)
    required = (f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING)
    missing = next((name for name in required if name not in table), None)
    if missing is not None:
        raise ConfigError(f"setting {missing!r} is missing", key or None)
    try:
        return cls(**table)
    except ConfigError as exc:
        raise (exc.under(key) if key else exc) from None


def _convert(value: object, hint: Any, key: str, rules: Mapping[str, Any]) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):  # X | None
        (inner,) = [a for a in args if a is not NoneType]
        return None if value is None else _convert(value, inner, key, rules)
    if origin is Annotated:  # GpuRef: an index may be written as a whole number
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            value = str(value)
        return _convert(value, args[0], key, rules)
    if origin is tuple:
        return _sequence(value, args, key, rules)
    if origin is dict:
        table = _expect(value, dict, "a table", key)
        return {_text(k, f"{key} key", {}): _convert(v, args[1], f"{key}.{k}", rules) for k, v in table.items()}
    if is_dataclass(hint):
        return build(hint, value, key)
    return _SCALARS[hint](value, key, rules)


def _sequence(value: object, args: tuple[Any, ...], key: str, rules: Mapping[str, Any]) -> tuple[Any, ...]:
    """A list: ``tuple[X, ...]`` of any length, ``tuple[X, Y]`` of two; ``ascending``: each below the next."""
    items = _expect(value, (list, tuple), "a list", key)
    if args[-1] is not Ellipsis and len(items) != len(args):
        raise ConfigError(f"must be a list of {len(args)} values, not {len(items)}", key)
    kinds = (args[0],) * len(items) if args[-1] is Ellipsis else args
    out = tuple(_convert(item, kind, f"{key}[{i}]", rules) for i, (item, kind) in enumerate(zip(items, kinds)))
    if rules.get("ascending") and any(low >= high for low, high in pairwise(out)):
        numbers = ", ".join(_number_text(v) for v in out)
        raise ConfigError(f"must go up (each number below the next), not [{numbers}]", key)
    return out


def _expect(value: object, kind: type | tuple[type, ...], what: str, key: str) -> Any:
    if not isinstance(value, kind):
        raise ConfigError(f"must be {what}, not {_described(value)}", key or None)
    return value


def _described(value: object) -> str:
    """A wrong value in a message: its kind, and for a short printable scalar the value."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" if value.isprintable() else "a string with control characters"
    if isinstance(value, (int, float)):
        return f"the number {_number_text(value)}"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "a table" if isinstance(value, dict) else type(value).__name__


def _flag(value: object, key: str, rules: Mapping[str, Any]) -> bool:
    return bool(_expect(value, bool, "true or false (a TOML boolean, without quotes)", key))


def _whole(value: object, key: str, rules: Mapping[str, Any]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"must be a whole number, not {_described(value)}", key)
    return int(_in_bounds(value, key, rules))


def _number(value: object, key: str, rules: Mapping[str, Any]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"must be a number, not {_described(value)}", key)
    if (isinstance(value, int) and abs(value) > _BIG) or not math.isfinite(value):
        raise ConfigError(f"must be a finite number, not {_number_text(value)}", key)
    return float(_in_bounds(value, key, rules))


def _in_bounds(value: float, key: str, rules: Mapping[str, Any]) -> float:
    bounds: Bounds | None = rules.get("bounds")
    if bounds is not None and not bounds.holds(value):
        raise ConfigError(f"must be {bounds}, not {_number_text(value)}", key)
    return value


_BIG = 1e300  # TOML integers are unbounded in Python; beyond this one is as good as infinite


def _number_text(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) or abs(value) <= _BIG else "a number too large to use"


def _text(value: object, key: str, rules: Mapping[str, Any]) -> str:
    text = _expect(value, str, "a string (in quotes)", key)
    bad = next((i for i, c in enumerate(text) if not c.isprintable()), None)
    if bad is not None:  # not echoed: the control characters would act on the terminal
        raise ConfigError(f"holds a control or invisible character (at position {bad})", key)
    limit = rules.get("max_chars", MAX_TEXT_CHARS)
    if len(text) > limit:
        raise ConfigError(f"is longer than {limit} characters", key)
    pattern: Pattern | None = rules.get("pattern")
    if pattern is not None and not pattern.regex.fullmatch(text):
        raise ConfigError(f"must be {pattern.what}, not {text[:40]!r}", key)
    choices = rules.get("choices")
    if choices is not None and text not in choices:
        raise ConfigError(f"must be one of {', '.join(choices)}, not {text!r}", key)
    return str(text)


def _path(value: object, key: str, rules: Mapping[str, Any]) -> Path:
    if isinstance(value, Path):
        return value
    return Path(_text(value, key, {"max_chars": 4096})).expanduser()


_SCALARS = {bool: _flag, int: _whole, float: _number, str: _text, Path: _path}
