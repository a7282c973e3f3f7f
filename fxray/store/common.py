"""What the store's modules share: errors, row-to-record conversion, the mixins' base."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from fxray.store.models import Base


class NotFound(LookupError):
    """The named service, version, trigger, run (or other record) does not exist."""


class Conflict(ValueError):
    """The write clashes with existing state."""


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
