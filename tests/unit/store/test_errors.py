"""Which database errors are an outage (retry the same write) and which a refusal."""

from __future__ import annotations

import pytest
from sqlalchemy import exc as sa_exc

from fxray.store import database_unavailable, describe_error


class DriverError(Exception):
    """A driver exception with PostgreSQL's SQLSTATE, as psycopg2's have."""

    def __init__(self, message: str, pgcode: str | None = None) -> None:
        super().__init__(message)
        self.pgcode = pgcode


def _wrapped(kind: type[sa_exc.DBAPIError], pgcode: str | None = None) -> sa_exc.DBAPIError:
    return kind("INSERT INTO runs ...", {"id": "r1"}, DriverError("the driver says", pgcode))


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (_wrapped(sa_exc.OperationalError, "08006"), True),  # connection failure
        (_wrapped(sa_exc.OperationalError, "57P01"), True),  # admin shutdown
        (_wrapped(sa_exc.OperationalError), True),  # connection refused: no SQLSTATE
        (_wrapped(sa_exc.InterfaceError), True),
        (sa_exc.TimeoutError("QueuePool limit reached"), True),
        (_wrapped(sa_exc.OperationalError, "54000"), False),  # a row over an index's limit
        (_wrapped(sa_exc.DataError, "22P02"), False),
        (_wrapped(sa_exc.IntegrityError, "23505"), False),
        (_wrapped(sa_exc.ProgrammingError), False),
        (ValueError("A string literal cannot contain NUL (0x00) characters."), False),
    ],
)
def test_outages_and_refusals(error: BaseException, unavailable: bool) -> None:
    assert database_unavailable(error) is unavailable


def test_an_invalidated_connection_is_an_outage_whatever_the_class() -> None:
    error = sa_exc.DBAPIError(
        "SELECT 1", {}, DriverError("server closed the connection"), connection_invalidated=True
    )
    assert database_unavailable(error)


def test_descriptions_leave_out_statements_and_parameters() -> None:
    error = sa_exc.DataError(
        "INSERT INTO runs (id, logs) VALUES (%(id)s, %(logs)s)",
        {"id": "r1", "logs": "secret-ish content"},
        DriverError("invalid input syntax for type json\nLINE 1: ...'[]'::JSON, 'NaN'::JSO"),
    )
    text = describe_error(error)
    assert text == "DriverError: invalid input syntax for type json"
    assert "INSERT" not in text and "secret-ish" not in text
    assert describe_error(ValueError("x" * 1000), limit=50).endswith("...")
    assert len(describe_error(ValueError("x" * 1000), limit=50)) == 50
