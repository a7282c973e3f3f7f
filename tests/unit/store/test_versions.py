"""Naming a version: by id, label or hash prefix, never a guess."""

from __future__ import annotations

import pytest

from fxray.store import Conflict, NotFound, StateStore


def _add(store: StateStore, content_hash: str, label: str | None) -> str:
    version, _ = store.add_version("svc", content_hash, {"name": "svc"}, label=label)
    return version.id


def test_label_wins_over_a_hash_prefix(store: StateStore) -> None:
    store.upsert_service("svc")
    first = _add(store, "beef" + "0" * 60, "old")
    second = _add(store, "c0de" + "1" * 60, "beef")
    assert store.resolve_version("svc", "beef").id == second
    assert store.resolve_version("svc", "old").id == first
    assert store.resolve_version("svc", "c0de1").id == second


def test_ambiguous_or_short_prefixes_are_refused(store: StateStore) -> None:
    store.upsert_service("svc")
    _add(store, "abcd1" + "0" * 59, "v1")
    _add(store, "abcd2" + "0" * 59, "v2")
    with pytest.raises(Conflict, match="2 versions"):
        store.resolve_version("svc", "abcd")
    assert store.resolve_version("svc", "abcd2").id.startswith("svc@")
    with pytest.raises(NotFound):
        store.resolve_version("svc", "a")
