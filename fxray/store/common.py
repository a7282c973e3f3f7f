"""What the store's modules share: errors, row-to-record conversion, the mixins' base."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from fxray.store.models import Base


class NotFound(LookupError):
    """The named service, version, trigger, run (or other record) does not exist."""


class Conflict(ValueError):
    """The write clashes with existing state."""


UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,  # connection refused or lost, server shutting down, locked, ...
    sa_exc.InterfaceError,  # the connection was closed under the driver
    sa_exc.TimeoutError,  # no pooled connection came free in time
)


def database_unavailable(error: BaseException) -> bool:
    """True if ``error`` says the database is away or busy, so the same write may work later;
    False if the database refused what was written (retrying it as it is would not help)."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, UNAVAILABLE_ERRORS):
        return False
    # PostgreSQL's class 54 (a program limit: a row too large for an index, too many columns)
    # reaches the driver as an OperationalError, but no retry makes that row fit
    code = getattr(getattr(error, "orig", None), "pgcode", None)
    return not (isinstance(code, str) and code.startswith("54"))


def describe_error(error: BaseException, limit: int = 300) -> str:
    """A one-line account of a database error: the driver's message, without the statement
    and parameters SQLAlchemy appends (they may hold whole rows)."""
    cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    first = (str(cause).strip().splitlines() or [""])[0]
    text = f"{type(cause).__name__}: {first}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record(cls: type, row: Any) -> Any:
    """A frozen record dataclass from an ORM row with the same attribute names."""
    return cls(**{name: getattr(row, name) for name in cls.__slots__})


class StoreMixin:
    """Base of the :class:`~fxray.store.StateStore` mixins: what they use of the store."""

    if TYPE_CHECKING:

        @property
        def engine(self) -> Engine: ...

        def session(self) -> AbstractContextManager[Session]: ...

        def _bump(self, s: Session) -> None: ...

        def _insert_ignore(self, model: type[Base]) -> Any: ...
