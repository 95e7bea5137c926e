"""Job parameters, typed from the job function's signature.

A job is `def job(ctx, *, name: type = default, ...)`. Values arrive as JSON
(API), strings (CLI `--param k=v`, schedule kwargs) or Python objects; each is
coerced to the declared type or refused with a message naming the parameter.
A number may carry bounds, `Annotated[int, Range(ge=0)]`, checked the same way,
so an out-of-range value is refused before anything runs.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils.dateparse import parse_date, parse_datetime

SUPPORTED_TYPES = (str, int, float, bool, Decimal, date, datetime)
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


class ParamError(ValueError):
    """A parameter was unknown, missing or of the wrong type."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of a numeric parameter."""

    ge: int | float | Decimal | None = None
    le: int | float | Decimal | None = None

    def check(self, name: str, value: Any) -> None:
        if self.ge is not None and value < self.ge:
            raise ParamError(
                f"parameter {name!r} must be at least {self.ge}, got {value}", param=name
            )
        if self.le is not None and value > self.le:
            raise ParamError(
                f"parameter {name!r} must be at most {self.le}, got {value}", param=name
            )


@dataclass(frozen=True)
class Choices:
    """The values a parameter may take, `Annotated[str, Choices("a", "b")]`."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        object.__setattr__(self, "values", tuple(values))

    def check(self, name: str, value: Any) -> None:
        if value not in self.values:
            listed = ", ".join(map(str, self.values))
            raise ParamError(
                f"parameter {name!r} must be one of {listed}, got {value!r}", param=name
            )


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any = inspect.Parameter.empty
    optional: bool = False  # None is an accepted value
    range: Range | None = None
    choices: Choices | None = None

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def describe(self) -> dict[str, Any]:
        default = None if self.required else _jsonable(self.default)
        described = {
            "name": self.name,
            "type": self.type.__name__,
            "required": self.required,
            "default": default,
        }
        if self.range is not None:
            described["min"] = _jsonable(self.range.ge)
            described["max"] = _jsonable(self.range.le)
        if self.choices is not None:
            described["choices"] = [_jsonable(v) for v in self.choices.values]
        return described


def params_from_signature(func) -> tuple[Param, ...]:
    """Read keyword-only parameters after the context argument."""
    signature = inspect.signature(func)
    hints = typing.get_type_hints(func, include_extras=True)
    found = []
    for i, p in enumerate(signature.parameters.values()):
        if i == 0:
            continue  # the JobContext
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{func.__qualname__}: job parameter {p.name!r} must be keyword-only")
        annotation = hints.get(p.name)
        if annotation is None:
            raise TypeError(f"{func.__qualname__}: parameter {p.name!r} needs a type")
        base, optional = _unwrap_optional(annotation)
        base, bounds, choices = _unwrap_annotated(base)
        if base not in SUPPORTED_TYPES:
            raise TypeError(
                f"{func.__qualname__}: parameter {p.name!r} has unsupported type {annotation!r}"
            )
        if bounds is not None and base not in (int, float, Decimal):
            raise TypeError(f"{func.__qualname__}: Range on non-numeric parameter {p.name!r}")
        found.append(Param(p.name, base, p.default, optional, bounds, choices))
    return tuple(found)


def _unwrap_annotated(annotation) -> tuple[Any, Range | None, Choices | None]:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return (
            base,
            next((e for e in extras if isinstance(e, Range)), None),
            next((e for e in extras if isinstance(e, Choices)), None),
        )
    return annotation, None, None


def _unwrap_optional(annotation) -> tuple[type, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def coerce_params(declared: tuple[Param, ...], values: dict[str, Any]) -> dict:
    """Validate and convert `values`; defaults are left to the function."""
    if not isinstance(values, dict):
        raise ParamError("params must be an object of name: value")
    by_name = {p.name: p for p in declared}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        known = ", ".join(sorted(by_name)) or "none"
        raise ParamError(
            f"unknown parameter {unknown[0]!r} (this job takes: {known})",
            param=unknown[0],
        )
    result = {}
    for p in declared:
        if p.name in values:
            result[p.name] = coerce_value(p, values[p.name])
        elif p.required:
            raise ParamError(f"missing required parameter {p.name!r}", param=p.name)
    return result


def coerce_value(p: Param, value: Any) -> Any:
    if value is None:
        if p.optional:
            return None
        raise ParamError(f"parameter {p.name!r} may not be null", param=p.name)
    try:
        converted = _CONVERTERS[p.type](value)
    except (TypeError, ValueError, InvalidOperation, OverflowError):
        raise ParamError(
            f"parameter {p.name!r} must be {_article(p.type)}, got {value!r}"[:300],
            param=p.name,
        ) from None
    if p.range is not None:
        p.range.check(p.name, converted)
    if p.choices is not None:
        p.choices.check(p.name, converted)
    return converted


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(value)


INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # what a database BIGINT holds


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and len(value) <= 25:
        value = int(value.strip())
    if not isinstance(value, int):
        raise TypeError(value)
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(value)
    return value


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        result = float(value.strip())
    else:
        raise TypeError(value)
    if result != result or result in (float("inf"), float("-inf")):
        raise ValueError(value)
    return result


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, (bool, float)):
        raise TypeError(value)
    result = Decimal(str(value).strip())
    if not result.is_finite():
        raise ValueError(value)
    return result


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _to_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        parsed = parse_date(value.strip())
        if parsed:
            return parsed
    raise ValueError(value)


def to_utc_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = parse_datetime(text)
        if parsed is None:
            raise ValueError(value)
    else:
        raise TypeError(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError(value) from None


_CONVERTERS = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    Decimal: _to_decimal,
    str: _to_str,
    date: _to_date,
    datetime: to_utc_datetime,
}


def _article(t: type) -> str:
    return {
        int: "an integer (64-bit)",
        float: "a number",
        bool: "a boolean (true/false)",
        Decimal: "a decimal number",
        str: "a string",
        date: "a date (YYYY-MM-DD)",
        datetime: "a datetime (ISO 8601)",
    }[t]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def params_to_json(values: dict[str, Any]) -> dict[str, Any]:
    """Coerced params as stored on JobRun.params (and read back by coerce)."""
    return {k: _jsonable(v) for k, v in values.items()}
