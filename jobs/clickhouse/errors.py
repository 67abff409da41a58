"""Which ClickHouse errors can never succeed on a retry, and which may.

The sink retries a transient failure (ClickHouse down, a timeout, a lost
answer, too many parts, memory) with back-off, as long as it takes: the rows
are fine, ClickHouse is not. A failure that is the rows' own fault (a value
ClickHouse cannot parse, convert or store, a function in a view throwing on
it) fails the same way forever; retrying it would stall the partition, so the
sink narrows it down to the rows that fail and sets those aside.

ClickHouse names the error in the message as `Code: N.`; the codes below are
ClickHouse's own (src/Common/ErrorCodes.cpp). Anything not listed is treated
as transient: a wrong guess then costs retries, never rows.
"""

from __future__ import annotations

import re

# Errors caused by the data of the insert.
DATA_ERROR_CODES = frozenset({
    6,    # CANNOT_PARSE_TEXT
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,   # ATTEMPT_TO_READ_AFTER_EOF
    33,   # CANNOT_READ_ALL_DATA
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    43,   # ILLEGAL_TYPE_OF_ARGUMENT
    53,   # TYPE_MISMATCH
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    190,  # SIZES_OF_ARRAYS_DONT_MATCH
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    407,  # DECIMAL_OVERFLOW
})

_CODE = re.compile(r"Code:\s*(\d+)")


def error_code(exc: BaseException) -> int | None:
    """ClickHouse's error code in an exception (clickhouse-connect or chDB), if it names one."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    found = _CODE.search(str(exc))
    return int(found.group(1)) if found else None


def is_data_error(exc: BaseException) -> bool:
    """True when the insert failed because of its rows: it will fail the same way every time."""
    return error_code(exc) in DATA_ERROR_CODES
