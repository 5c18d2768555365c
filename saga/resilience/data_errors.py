"""Database errors told apart: the database is unavailable, or it refuses a record's data.

"Unavailable" (connection lost, too many connections, a serialization failure or a
deadlock, a statement timeout) passes: the delivery is retried until the database is
back. "Refuses this record's data" does not pass: the same record fails the same way
every time. It is the record's problem, so it fails for good at once instead of holding
its partition forever:

* PostgreSQL's class 22, *data exception*: a NUL in text
  (``CharacterNotInRepertoireError``), a number out of its column's range
  (``NumericValueOutOfRangeError``), invalid text for a type
  (``InvalidTextRepresentationError``), a string too long for its column
  (``StringDataRightTruncationError``), ... asyncpg raises the same family
  (``asyncpg.DataError``) for an argument it cannot encode, such as a lone surrogate
  (``"\\ud800"``) in a string or an int beyond its column's range;
* class 54, *program limit exceeded*: a value too large for its index (an id of
  several kilobytes);
* Python's own encoding errors (:class:`UnicodeError`).

A record the database refuses is dead-lettered with the reason by the consumer (or, when
it is a step handler's own write that is refused, the step fails at once: see
:mod:`saga.participant.attempts`).

>>> import asyncpg
>>> refuses_data(asyncpg.NumericValueOutOfRangeError("integer out of range"))
True
>>> refuses_data(asyncpg.TooManyConnectionsError("sorry, too many clients"))
False
"""

from __future__ import annotations

from saga.errors import SagaError
from saga.kafka.dead_letter import describe_error

#: SQLSTATE classes that mean "this data", not "this database": data exception, program
#: limit exceeded.
REFUSED_DATA_CLASSES = ("22", "54")
_CHAIN_LIMIT = 8


class RecordRefused(SagaError):
    """The database refuses this record's data: dead-lettered at once, never retried.

    ``error_type`` names the database's error (``CharacterNotInRepertoireError``, ...).
    """

    def __init__(self, message: str, *, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def refuses_data(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is the database refusing the
    data it was given, rather than being unavailable."""
    return refused_by(error) is not None


def refused_by(error: BaseException) -> BaseException | None:
    """The error in ``error``'s chain (itself, then what it was raised from) that says
    the database refuses the data; ``None`` when there is none."""
    seen: BaseException | None = error
    for _ in range(_CHAIN_LIMIT):
        if seen is None:
            return None
        if isinstance(seen, RecordRefused | UnicodeError):
            return seen
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in REFUSED_DATA_CLASSES:
            return seen
        seen = seen.__cause__
    return None


def record_refused(error: BaseException) -> RecordRefused:
    """``error`` as a :class:`RecordRefused` naming the database's error (``error`` must
    refuse data, see :func:`refuses_data`)."""
    if isinstance(error, RecordRefused):
        return error
    cause = refused_by(error) or error
    return RecordRefused(
        f"the database refuses this record's data: {printable(describe_error(cause))}",
        error_type=type(cause).__name__,
    )


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (a lone surrogate) escaped."""
    # A lone surrogate quoted in the error would not encode into a header.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
