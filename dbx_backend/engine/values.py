"""The JSON form of one value of one SQL type, the same at the top of a row and at any depth.

`normalize.py` converts whole columns and keeps its fast paths beside these rules; everything
here decides one value. Nested values (ARRAY, MAP, STRUCT) are walked with their type's parts,
so a LONG or a DECIMAL inside a struct is written exactly as a LONG or DECIMAL column is:

* JSON_ARRAY gives a nested value as JSON text (reference §7.3); it is parsed exactly (integers
  of any size, decimals keeping their digits) and each part then follows its own type's rule.
* Arrow gives Python values (`int`, `Decimal`, `datetime`, `bytes`, ...): the same rules apply.
* A MAP with string keys becomes a JSON object; other keys a list of `{"key", "value"}`. Its
  JSON text may come in either form (reference §7.3), and either is read.
* A STRUCT has every field of its type, in order; a field the JSON text left out is null.
* Where `type_text` did not describe the parts, a nested value keeps what its JSON text says:
  integers exact, decimals as numbers, non-finite floats as "NaN"/"Infinity"/"-Infinity".
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache, partial
from math import isfinite
from typing import Any, Literal, TypeAlias

import orjson

from dbx_backend.engine.sqltypes import STRING_KINDS, SqlType

# What a result value becomes: JSON, to any depth.
# (Sequence and Mapping, not list and dict: read-only, so a list of rows is a JSON value too.)
JsonValue: TypeAlias = (
    "str | int | float | bool | Sequence[JsonValue] | Mapping[str, JsonValue] | None"
)
Convert = Callable[[Any], JsonValue]


@dataclass(frozen=True, slots=True)
class NormalizeOptions:
    """Client choices about value rendering."""

    long_as_string: bool = False
    # Reference §7.3: sources disagree on BINARY's text form; base64 is the documented default.
    binary_input: Literal["base64", "hex"] = "base64"


# ---- scalar text forms (reference §7.3) --------------------------------------------------


def long_text(text: str | int) -> str:
    """A LONG as the string `long_as_string` asks for."""
    return str(int(text))


NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def float_text(text: str) -> float | str:
    """A FLOAT/DOUBLE text; NaN and the infinities become their strings."""
    return float_json(float(text))  # takes NaN, inf, Infinity, +Infinity, -Infinity, any case


def float_json(value: float) -> float | str:
    """A float as JSON can hold it: itself, or "NaN", "Infinity", "-Infinity"."""
    return value if isfinite(value) else NON_FINITE[repr(value)]


def decimal_text(text: str, scale: int | None) -> str:
    """A DECIMAL text at `scale`: the digits sent, padded to the scale, never rounded."""
    # Plain text already at the scale is the value: `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, checked
    # with string methods (ASCII only: str.isdigit also takes other scripts' digits).
    whole, dot, fraction = text.partition(".")
    digits = whole[1:] if whole[:1] == "-" else whole
    if (
        (scale is None or len(fraction) == scale)
        and text.isascii()
        and digits.isdigit()
        and (digits[0] != "0" or len(digits) == 1)
        and (not dot or fraction.isdigit())
    ):
        return text
    return render_decimal(Decimal(text), scale)


def render_decimal(value: Decimal, scale: int | None) -> str:
    """A decimal in plain notation, its fraction padded up to `scale` digits."""
    if not value.is_finite():
        raise ValueError("not a finite decimal")
    text = format(value, "f")  # plain notation, exact: no context precision involved
    if scale:
        digits = len(text) - text.index(".") - 1 if "." in text else -1
        if digits < scale:
            text += ("." if digits < 0 else "") + "0" * (scale - max(digits, 0))
    return text


_BOOLEANS = {"true": True, "false": False}


def boolean_text(text: str) -> bool:
    """`true`/`false` in any case."""
    return _BOOLEANS[text.lower()]


def date_text(text: str) -> str:
    """A DATE as `YYYY-MM-DD`."""
    day = date.fromisoformat(text)  # also takes "20240115" and week dates: rendered plain
    return text if len(text) == 10 and text[7] == "-" else day.isoformat()


TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
_UTC_OFFSETS = frozenset({None, "Z", "z", "+00:00", "+0000", "+00", "-00:00", "-0000", "-00"})


@lru_cache(maxsize=4096)
def check_day(text: str) -> None:
    """Raise ValueError unless `text` is a real `YYYY-MM-DD` day (cached: data repeats days)."""
    date.fromisoformat(text)


def timestamp_text(text: str) -> str:
    """A TIMESTAMP in UTC with `Z`: an offset is applied, none means UTC."""
    match = TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError("not a timestamp")
    fraction, offset = match.groups()
    # The pattern validates the time of day and the day is checked on its own (cached: real
    # data repeats its days); the fraction stays text so nanoseconds survive.
    check_day(text[:10])
    if offset in _UTC_OFFSETS:
        wall = f"{text[:10]}T{text[11:19]}"
    else:
        hours, minutes = int(offset[1:3]), (int(offset[-2:]) if len(offset) > 3 else 0)
        if hours > 18 or minutes > 59:
            raise ValueError("not a UTC offset")
        shift = timedelta(hours=hours, minutes=minutes)
        moment = datetime.fromisoformat(text[:19])
        wall = (moment - shift if offset[0] == "+" else moment + shift).isoformat()
    return f"{wall}{fraction_digits(fraction)}Z"


def timestamp_ntz_text(text: str) -> str:
    """A TIMESTAMP_NTZ as wall-clock time; an offset on the input is ignored, not applied."""
    match = TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError("not a timestamp")
    check_day(text[:10])
    return f"{text[:10]}T{text[11:19]}{fraction_digits(match[1])}"


def fraction_digits(digits: str | None) -> str:
    """Fraction digits as 3, 6 or 9 of them: the fewest that hold every non-zero digit."""
    if digits is None:
        return ".000"
    if len(digits) == 3:
        return "." + digits
    needed = len(digits.rstrip("0"))
    width = 3 if needed <= 3 else 6 if needed <= 6 else 9
    return "." + digits[:width].ljust(width, "0")


def datetime_text(value: datetime, suffix: str) -> str:
    """A Python datetime in the TIMESTAMP (`suffix` "Z") or TIMESTAMP_NTZ ("") form."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC) if suffix else value
        value = value.replace(tzinfo=None)
    return f"{value:%Y-%m-%dT%H:%M:%S}{fraction_digits(f'{value.microsecond:06d}')}{suffix}"


def base64_text(text: str) -> str:
    """BINARY sent as base64, checked and written canonically."""
    return base64.b64encode(base64.b64decode(text, validate=True)).decode("ascii")


def hex_to_base64(text: str) -> str:
    """BINARY sent as hex, written as base64."""
    return base64.b64encode(binascii.unhexlify(text)).decode("ascii")


def bytes_base64(value: bytes) -> str:
    """BINARY from Arrow, written as base64."""
    return base64.b64encode(value).decode("ascii")


# ---- JSON text ---------------------------------------------------------------------------

# orjson reads integers beyond 64 bits as floats, silently: such texts go through `json`.
_LONG_INTEGER = re.compile(r"[0-9]{19}")


def json_text(text: str) -> JsonValue:
    """JSON text as JSON values: integers exact, NaN/Infinity literals as their strings."""
    parsed: JsonValue
    if _LONG_INTEGER.search(text) is None:
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # NaN/Infinity literals, or truly bad JSON: the exact parser decides
        else:
            return parsed
    parsed = json.loads(text, parse_float=_json_float, parse_constant=_json_constant)
    return parsed


def json_text_exact(text: str) -> Any:
    """JSON text with every fractional number kept as a `Decimal` of the digits written: raw
    input for the value rules, which turn each part into JSON by its type."""
    return json.loads(text, parse_float=Decimal, parse_constant=_json_constant)


def _json_float(text: str) -> float | str:
    return float_json(float(text))


def _json_constant(text: str) -> str:
    return {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}[text]


# ---- one value of a type, at any depth ----------------------------------------------------


def nested_text_converter(sql_type: SqlType, options: NormalizeOptions) -> Convert:
    """JSON text of a nested value -> its JSON value, each part by its own type's rule."""
    convert = value_converter(sql_type, options)
    # A double holds every decimal of up to 15 digits exactly (its shortest repr gives them
    # back); wider DECIMALs need the slower reader that keeps every digit.
    parse = json_text_exact if _has_wide_decimal(sql_type) else json_text
    return lambda text: convert(parse(text))


def _has_wide_decimal(sql_type: SqlType) -> bool:
    if sql_type.kind == "DECIMAL":
        return sql_type.precision is None or sql_type.precision > _DOUBLE_DIGITS
    return any(_has_wide_decimal(part) for part in sql_type.parts())


_DOUBLE_DIGITS = 15


def value_converter(sql_type: SqlType, options: NormalizeOptions) -> Convert:
    """A converter of one non-null value of `sql_type`, from parsed JSON text or from Arrow."""
    kind = sql_type.kind
    if kind in ("BYTE", "SHORT", "INT"):
        return _integer
    if kind == "LONG":
        return _long_string if options.long_as_string else _integer
    if kind == "DOUBLE":
        return _double
    if kind == "FLOAT":
        return _float32
    if kind == "DECIMAL":
        return partial(_decimal, scale=sql_type.scale, precision=sql_type.precision)
    if kind == "BOOLEAN":
        return _boolean
    if kind == "DATE":
        return _date
    if kind in ("TIMESTAMP", "TIMESTAMP_NTZ"):
        return partial(_timestamp, suffix="Z" if kind == "TIMESTAMP" else "")
    if kind == "BINARY":
        return partial(_binary, hex_input=options.binary_input == "hex")
    if kind in STRING_KINDS:
        return _string
    if kind == "NULL":
        return _null
    if kind == "VARIANT" or not sql_type.known:
        return untyped
    if kind == "ARRAY" and sql_type.element is not None:
        return _array(value_converter(sql_type.element, options))
    if kind == "STRUCT" and sql_type.fields is not None:
        return _struct([(name, value_converter(t, options)) for name, t in sql_type.fields])
    if kind == "MAP" and sql_type.key is not None and sql_type.value is not None:
        key = value_converter(sql_type.key, options)
        value = value_converter(sql_type.value, options)
        return _map(key, value, as_object=sql_type.key.kind in STRING_KINDS)
    return _text  # INTERVAL, USER_DEFINED_TYPE, GEOMETRY, GEOGRAPHY and unknown types


def untyped(value: Any) -> JsonValue:
    """A value whose type is not known: as its JSON text says (decimals as numbers)."""
    if isinstance(value, dict):
        return {k: None if v is None else untyped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [None if v is None else untyped(v) for v in value]
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        whole = isinstance(exponent, int) and exponent >= 0
        return int(value) if whole else float_json(float(value))
    if type(value) is float:
        return float_json(value)
    scalar: JsonValue = value  # str, int, bool: JSON as they are
    return scalar


def _integer(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, str):
        return int(value)
    raise TypeError("not an integer")


def _long_string(value: Any) -> str:
    return str(_integer(value))


def _double(value: Any) -> float | str:
    if type(value) is float:
        return float_json(value)
    if isinstance(value, str):
        return float_text(value)
    if type(value) is int or isinstance(value, Decimal):
        return float_json(float(value))
    raise TypeError("not a number")


_FLOAT32 = struct.Struct("<f")


def _float32(value: Any) -> float | str:
    # The shortest decimal that is the same 32-bit float: what the warehouse writes for FLOAT,
    # whether it arrived as that text or, widened, as a double from Arrow.
    number = _double(value)
    if isinstance(number, str):
        return number
    try:
        bits = _FLOAT32.pack(number)
    except OverflowError:
        return number
    for digits in range(1, 10):
        shortest = float(f"{number:.{digits}g}")
        if _FLOAT32.pack(shortest) == bits:
            return shortest
    return number


def _decimal(value: Any, scale: int | None, precision: int | None) -> str:
    if isinstance(value, str):
        return decimal_text(value, scale)
    if isinstance(value, Decimal) or type(value) is int:
        return render_decimal(Decimal(value), scale)
    if type(value) is float and precision is not None and precision <= _DOUBLE_DIGITS:
        return render_decimal(Decimal(repr(value)), scale)  # exact: see nested_text_converter
    raise TypeError("not a decimal")  # a wider float's digits may not be the value's


def _boolean(value: Any) -> bool:
    if type(value) is bool:
        return value
    if isinstance(value, str):
        return boolean_text(value)
    raise TypeError("not a boolean")


def _date(value: Any) -> str:
    if isinstance(value, str):
        return date_text(value)
    if type(value) is date:
        return value.isoformat()
    raise TypeError("not a date")


def _timestamp(value: Any, suffix: str) -> str:
    if isinstance(value, str):
        return timestamp_text(value) if suffix else timestamp_ntz_text(value)
    if isinstance(value, datetime):
        return datetime_text(value, suffix)
    raise TypeError("not a timestamp")


def _binary(value: Any, hex_input: bool) -> str:
    if isinstance(value, str):
        return hex_to_base64(value) if hex_input else base64_text(value)
    if isinstance(value, bytes):
        return bytes_base64(value)
    raise TypeError("not binary")


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeError("not a string")


# Converters whose output is their input when it has this Python type: a nested value made
# only of such parts is checked in one C-speed pass (`map(type, ...)`) and kept whole.
_KEPT_AS_IS: dict[Convert, type] = {_integer: int, _string: str, _boolean: bool}


def _null(value: Any) -> None:
    return None


def _text(value: Any) -> JsonValue:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return bytes_base64(value)  # e.g. geometry as WKB from Arrow
    if isinstance(value, (dict, list, int, float, Decimal)):
        return untyped(value)
    if _is_arrow_interval(value):
        return interval_text(value.months, value.days, value.nanoseconds)
    return str(value)  # Arrow durations, times: their text


def _is_arrow_interval(value: Any) -> bool:
    # An Arrow value exists only once pyarrow is imported: no import here to find out.
    pyarrow = sys.modules.get("pyarrow")
    return pyarrow is not None and isinstance(value, pyarrow.MonthDayNano)


def interval_text(months: int, days: int, nanoseconds: int) -> str:
    """An INTERVAL that arrived as Arrow's month_day_nano (as the local warehouse sends it),
    written as the warehouse writes the same value in JSON_ARRAY: "1 year 2 months",
    "-3 days", "1 day 04:05:06.5", "-01:30:00"; "00:00:00" when it is zero. Hours are not
    folded into days, and the fraction keeps its significant digits only."""
    years, rest = int(months / 12), months - int(months / 12) * 12  # both toward zero
    parts = [
        f"{count} {unit}" + ("" if abs(count) == 1 else "s")
        for count, unit in ((years, "year"), (rest, "month"), (days, "day"))
        if count
    ]
    if nanoseconds or not parts:
        sign, whole = ("-" if nanoseconds < 0 else ""), abs(nanoseconds)
        seconds, fraction = divmod(whole, 1_000_000_000)
        minutes, second = divmod(seconds, 60)
        hours, minute = divmod(minutes, 60)
        clock = f"{sign}{hours:02d}:{minute:02d}:{second:02d}"
        if fraction:
            clock += "." + f"{fraction:09d}".rstrip("0")
        parts.append(clock)
    return " ".join(parts)


def _parsed(value: Any) -> Any:
    # A nested value that arrived as text (e.g. a map key holding a struct): its JSON.
    return json_text_exact(value) if isinstance(value, str) else value


def _array(item: Convert) -> Convert:
    kept = _KEPT_AS_IS.get(item)
    as_is = frozenset({kept, type(None)})

    def convert(values: Any) -> list[JsonValue]:
        values = _parsed(values)
        if not isinstance(values, list):
            raise TypeError("not an array")
        if kept is not None and as_is.issuperset(map(type, values)):
            return values
        return [None if v is None else item(v) for v in values]

    return convert


def _struct(fields: list[tuple[str, Convert]]) -> Convert:
    names = frozenset(name for name, _ in fields)
    order = [name for name, _ in fields]
    kept = {_KEPT_AS_IS.get(convert_field) for _, convert_field in fields}
    as_is = frozenset({*kept, type(None)}) if None not in kept else None

    def convert(record: Any) -> dict[str, JsonValue]:
        record = _parsed(record)
        if not isinstance(record, dict):
            raise TypeError("not a struct")
        if (
            as_is is not None
            and list(record) == order
            and as_is.issuperset(map(type, record.values()))
        ):
            return record
        out = {
            name: None if (value := record.get(name)) is None else convert_field(value)
            for name, convert_field in fields
        }
        if not record.keys() <= names:  # fields the type did not name are kept, untyped
            out |= {k: untyped(v) for k, v in record.items() if k not in names}
        return out

    return convert


def _map(key: Convert, value: Convert, *, as_object: bool) -> Convert:
    def convert(entries: Any) -> JsonValue:
        pairs = _map_pairs(_parsed(entries))
        if as_object:
            return {str(key(k)): None if v is None else value(v) for k, v in pairs}
        return [{"key": key(k), "value": None if v is None else value(v)} for k, v in pairs]

    return convert


def _map_pairs(entries: Any) -> Iterable[tuple[Any, Any]]:
    """(key, value) pairs of a map: a JSON object, a list of {"key", "value"}, or Arrow's
    list of (key, value) tuples."""
    if isinstance(entries, dict):
        return entries.items()
    if isinstance(entries, list):
        return [
            (entry["key"], entry.get("value")) if isinstance(entry, dict) else tuple(entry)
            for entry in entries
        ]
    raise TypeError("not a map")
