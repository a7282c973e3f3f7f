"""State stores on a temporary SQLite file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fxray.store import StateStore
from tests.store_schema import state_stores


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def make_store(db_url: str) -> Iterator[Callable[[], StateStore]]:
    """More stores on the same file (as other processes would have)."""
    with state_stores(db_url) as make:
        yield make


@pytest.fixture
def store(make_store: Callable[[], StateStore]) -> StateStore:
    return make_store()
