"""What the ClickHouse columns can hold, as field types for the contracts: a value a contract accepts can be
stored (pipeline/storage/migrations/*.sql, mapped in pipeline/storage/rows.py), and a value that cannot is
refused where it enters, naming its field, instead of failing the sink's insert.

Integer columns are UInt16 / UInt32 / Int32 / Int64; times are integer nanoseconds since the epoch, stored
as DateTime64(6) (1900..2299), so from 0 up to what an int64 of nanoseconds holds (2262-04-11). Floats are
finite (pydantic would otherwise read "inf" and "nan" from a string), and costs non-negative and capped, so
that a trace's or a session's sum stays finite too.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field

UINT16_MAX = 2**16 - 1
UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
TIMESTAMP_NS_MAX = INT64_MAX
COST_USD_MAX = 1e15  # per span, turn or session: far beyond any real bill, and a sum of them stays finite

ID_MAX_CHARS = 128  # trace and span ids (OpenTelemetry's are 32 and 16 hex characters)
# A trace id a reader may ask about (`why`, a worker's /traces/open/<id>): safe inside SQL and a URL path.
LOOKUP_TRACE_ID = re.compile(rf"^[A-Za-z0-9_.:\-]{{1,{ID_MAX_CHARS}}}\Z")  # \Z: no trailing newline
SESSION_ID_MAX_CHARS = 256
NAME_MAX_CHARS = 1024  # span names
SPAN_TYPE_MAX_CHARS = 64
ATTRIBUTES_MAX = 4096  # keys of a span's attributes (OpenTelemetry's SDK keeps 128 by default)
EVALUATIONS_MAX = UINT16_MAX + 1  # async_evaluate requests on one span: their index is a UInt16

TimestampNs = Annotated[int, Field(ge=0, le=TIMESTAMP_NS_MAX)]
UInt16 = Annotated[int, Field(ge=0, le=UINT16_MAX)]
UInt32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
Int32 = Annotated[int, Field(ge=-(2**31), le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=-(2**63), le=INT64_MAX)]
NonNegativeInt64 = Annotated[int, Field(ge=0, le=INT64_MAX)]
Version = Annotated[int, Field(ge=1, le=UINT32_MAX)]  # trace and session versions, turns
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegativeFinite = Annotated[float, Field(ge=0, allow_inf_nan=False)]
CostUsd = Annotated[float, Field(ge=0, le=COST_USD_MAX, allow_inf_nan=False)]


def is_count(value: Any) -> bool:
    """Whether `value` fits a UInt32 count column (a token count): an int, not a bool, 0..2**32-1."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= UINT32_MAX


def is_cost(value: Any) -> bool:
    """Whether `value` is a cost the contracts accept: a finite, non-negative number up to COST_USD_MAX."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and 0 <= value <= COST_USD_MAX)  # NaN compares false; inf is over the cap


def cap_attributes(attributes: dict[str, Any], dropped_key: str = "evalstream.dropped_attributes") -> dict[str, Any]:
    """`attributes` within ATTRIBUTES_MAX keys: the first ones kept, the number left out under `dropped_key`."""
    if len(attributes) <= ATTRIBUTES_MAX:
        return attributes
    kept = dict(list(attributes.items())[:ATTRIBUTES_MAX - 1])
    kept[dropped_key] = len(attributes) - len(kept)
    return kept
