"""Per-fix validation at the gateway: a pure, fast function with machine-readable reasons.

The field list, which fields are required, and every bound (ranges, lengths, allowed values)
are read once from the pydantic core schema of :class:`schemas.records.Fix`, so the wire record
stays the one definition. Validating with pydantic per fix costs several microseconds and gives
pydantic's error codes; this table-driven checker does the same checks in plain Python with
the gateway's own reason codes (``lat_out_of_range``, ``ts_in_future``, ...), and a property test
holds it to pydantic's verdict on the non-time fields.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from schemas.records import Fix
from schemas.wire import adapter

FieldKind = Literal["str", "datetime", "float", "literal", "bool"]

# RFC 3339 date-time with a mandatory offset; fromisoformat alone would also take dates,
# week dates and naive times.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of :class:`Fix` as the validator needs it, compiled from the core schema."""

    name: str
    kind: FieldKind
    required: bool
    nullable: bool = False
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    choices: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """How far from the gateway clock a fix's ``ts`` may be (settings ``ingest_*``)."""

    future_tolerance_s: float
    max_age_s: float


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one fix was refused: ``reason`` is the machine-readable code."""

    reason: str
    field: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused fix as listed in the response's ``rejected``."""

    index: int
    fix_id: str | None
    reason: str
    field: str | None
    detail: str

    def as_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "fix_id": self.fix_id,
            "reason": self.reason,
            "field": self.field,
            "detail": self.detail,
        }


@dataclass(slots=True)
class BatchVerdict:
    """The outcome of one request's fixes: the clean ones in order, the refused ones, and how
    often each unknown field name was dropped."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    unknown_fields: dict[str, int] = field(default_factory=dict)


def _spec_from_core(name: str, schema: dict[str, Any]) -> FieldSpec:
    required = schema.get("type") != "default"
    if not required:
        schema = schema["schema"]
    nullable = schema.get("type") == "nullable"
    if nullable:
        schema = schema["schema"]
    kind = schema["type"]
    if kind not in ("str", "datetime", "float", "literal", "bool"):
        raise TypeError(f"Fix.{name}: the gateway validator has no check for {kind!r} fields")
    if kind == "float" and schema.get("allow_inf_nan", True):
        raise TypeError(f"Fix.{name}: floats on the wire must be finite")
    return FieldSpec(
        name=name,
        kind=kind,
        required=required,
        nullable=nullable,
        ge=schema.get("ge"),
        gt=schema.get("gt"),
        le=schema.get("le"),
        lt=schema.get("lt"),
        min_length=schema.get("min_length"),
        max_length=schema.get("max_length"),
        choices=frozenset(schema.get("expected", ())),
    )


def fix_field_specs() -> tuple[FieldSpec, ...]:
    """The fields of :class:`Fix` in declaration order, with bounds from its annotations."""
    core = adapter(Fix).core_schema
    while core["type"] != "dataclass-args":
        core = core["schema"]
    specs = tuple(_spec_from_core(f["name"], f["schema"]) for f in core["fields"])
    names = tuple(f.name for f in dataclasses.fields(Fix))
    if tuple(s.name for s in specs) != names:
        raise TypeError(f"core schema fields {specs} differ from Fix fields {names}")
    return specs


SPECS: Final = fix_field_specs()
FIELD_NAMES: Final = frozenset(s.name for s in SPECS)


def _is_number(value: object) -> bool:
    kind = type(value)
    return kind is float or kind is int  # bool is an int subclass and is refused


def _check_number(spec: FieldSpec, value: object) -> tuple[float | None, Problem | None]:
    if not _is_number(value):
        return None, Problem("invalid_type", spec.name, f"{spec.name} must be a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:
        number = math.inf if value > 0 else -math.inf  # type: ignore[operator]
    if not math.isfinite(number):
        if type(value) is int:
            return None, Problem(f"{spec.name}_out_of_range", spec.name, "number too large")
        return None, Problem("not_finite", spec.name, f"{spec.name} is NaN or Infinity")
    if (
        (spec.ge is not None and number < spec.ge)
        or (spec.gt is not None and number <= spec.gt)
        or (spec.le is not None and number > spec.le)
        or (spec.lt is not None and number >= spec.lt)
    ):
        return None, Problem(
            f"{spec.name}_out_of_range", spec.name, f"{spec.name}={number} is out of {_range(spec)}"
        )
    return number, None


def _range(spec: FieldSpec) -> str:
    low = "(-inf"
    if spec.ge is not None:
        low = f"[{spec.ge}"
    elif spec.gt is not None:
        low = f"({spec.gt}"
    high = "inf)"
    if spec.le is not None:
        high = f"{spec.le}]"
    elif spec.lt is not None:
        high = f"{spec.lt})"
    return f"{low}, {high}"


def unstorable(text: str) -> bool:
    """Whether ``text`` has a NUL (PostgreSQL text cannot hold one) or a lone surrogate (not
    UTF-8: orjson cannot write it, pydantic refuses it)."""
    if "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _check_str(spec: FieldSpec, value: object) -> tuple[str | None, Problem | None]:
    if type(value) is not str:
        return None, Problem("invalid_type", spec.name, f"{spec.name} must be a string")
    if unstorable(value):
        return None, Problem(
            "invalid_characters", spec.name, f"{spec.name} has a NUL or a lone surrogate"
        )
    if spec.max_length is not None and len(value) > spec.max_length:
        return None, Problem(
            f"{spec.name}_too_long", spec.name, f"longer than {spec.max_length} characters"
        )
    if spec.min_length is not None and len(value) < spec.min_length:
        return None, Problem(f"{spec.name}_empty", spec.name, f"{spec.name} must not be empty")
    return value, None


def _check_literal(spec: FieldSpec, value: object) -> tuple[str | None, Problem | None]:
    if type(value) is not str:
        return None, Problem("invalid_type", spec.name, f"{spec.name} must be a string")
    if value not in spec.choices:
        allowed = ", ".join(sorted(spec.choices))
        return None, Problem(f"invalid_{spec.name}", spec.name, f"{spec.name} is one of {allowed}")
    return value, None


def _check_bool(spec: FieldSpec, value: object) -> tuple[bool | None, Problem | None]:
    if type(value) is not bool:
        return None, Problem("invalid_type", spec.name, f"{spec.name} must be true or false")
    return value, None


def parse_ts(value: object) -> tuple[float | None, datetime | None, Problem | None]:
    """``ts`` as (epoch seconds, UTC datetime): RFC 3339 with an offset, or epoch milliseconds."""
    kind = type(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        if _RFC3339.fullmatch(text) is None:
            return None, None, Problem("invalid_ts", "ts", "ts must be RFC 3339 with an offset")
        try:
            when = datetime.fromisoformat(text.upper()).astimezone(UTC)
        except (ValueError, OverflowError):
            return None, None, Problem("invalid_ts", "ts", "ts is not a valid date-time")
        return when.timestamp(), when, None
    if kind is int or kind is float:
        millis: float = value  # type: ignore[assignment]
        if kind is float and not math.isfinite(millis):
            return None, None, Problem("not_finite", "ts", "ts is NaN or Infinity")
        # The range is checked by the caller on the number, before any datetime is built.
        try:
            return millis / 1000.0, None, None
        except OverflowError:  # an int beyond any float: certainly out of the time window
            return (math.inf if millis > 0 else -math.inf), None, None
    return None, None, Problem("invalid_type", "ts", "ts must be RFC 3339 text or epoch ms")


def _epoch_ms_to_datetime(value: int | float) -> datetime:
    if type(value) is int:
        seconds, millis = divmod(value, 1000)
        return datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)
    return datetime.fromtimestamp(value / 1000.0, UTC)


Checker = Callable[[FieldSpec, object], tuple[Any, Problem | None]]
_CHECKERS: Final[dict[str, Checker]] = {
    "float": _check_number,
    "str": _check_str,
    "literal": _check_literal,
    "bool": _check_bool,
}
# (spec, checker) for every field but ts, fix_id first so a refusal can name the fix.
_PLAN: Final = tuple(
    (spec, _CHECKERS[spec.kind])
    for spec in sorted(SPECS, key=lambda s: s.name != "fix_id")
    if spec.kind != "datetime"
)
_TS_SPEC: Final = next(s for s in SPECS if s.kind == "datetime")
_FIX_ID_MAX: Final = next(s.max_length or 0 for s in SPECS if s.name == "fix_id")


def validate_fix(
    raw: object, now_s: float, limits: TimeLimits
) -> tuple[dict[str, Any] | None, Problem | None]:
    """One fix as sent, checked against the schema and the clock; unknown keys are ignored here.

    Returns the clean fix (schema fields only, ``ts`` as an aware UTC datetime, numbers as
    floats, absent optional fields left out) or the first problem found.
    """
    if type(raw) is not dict:
        return None, Problem("invalid_type", None, "a fix must be a JSON object")
    clean: dict[str, Any] = {}
    for spec, check in _PLAN:
        value = raw.get(spec.name, _MISSING)
        if value is _MISSING or value is None:
            if spec.required:
                if value is None:
                    return None, Problem("invalid_type", spec.name, f"{spec.name} is null")
                return None, Problem("missing_field", spec.name, f"{spec.name} is required")
            continue
        checked, problem = check(spec, value)
        if problem is not None:
            return None, problem
        clean[spec.name] = checked
    ts_value = raw.get(_TS_SPEC.name, _MISSING)
    if ts_value is _MISSING:
        return None, Problem("missing_field", "ts", "ts is required")
    epoch_s, when, problem = parse_ts(ts_value)
    if problem is not None:
        return None, problem
    assert epoch_s is not None
    if epoch_s > now_s + limits.future_tolerance_s:
        ahead = epoch_s - now_s
        return None, Problem("ts_in_future", "ts", f"ts is {ahead:.0f}s ahead of the gateway")
    if epoch_s < now_s - limits.max_age_s:
        return None, Problem(
            "ts_too_old", "ts", f"ts is older than {limits.max_age_s:.0f}s (live ingest)"
        )
    clean["ts"] = when if when is not None else _epoch_ms_to_datetime(ts_value)
    return clean, None


def validate_batch(items: Sequence[object], now_s: float, limits: TimeLimits) -> BatchVerdict:
    """Every fix of a request: good neighbours of a bad fix go through."""
    verdict = BatchVerdict()
    unknown = verdict.unknown_fields
    for index, raw in enumerate(items):
        if type(raw) is dict:
            extra = raw.keys() - FIELD_NAMES
            for name in extra:
                unknown[name] = unknown.get(name, 0) + 1
        clean, problem = validate_fix(raw, now_s, limits)
        if problem is None:
            assert clean is not None
            verdict.accepted.append(clean)
            continue
        fix_id = raw.get("fix_id") if type(raw) is dict else None
        verdict.refused.append(
            Refusal(
                index=index,
                fix_id=fix_id
                if type(fix_id) is str and len(fix_id) <= _FIX_ID_MAX and not unstorable(fix_id)
                else None,
                reason=problem.reason,
                field=problem.field,
                detail=problem.detail,
            )
        )
    return verdict
