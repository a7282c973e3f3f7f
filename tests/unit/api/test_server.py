"""``fxray up``'s first admin key."""

from __future__ import annotations

from pathlib import Path

from fxray.api.server import bootstrap_admin_key
from fxray.store import StateStore


def test_first_start_creates_one_admin_key(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    token = bootstrap_admin_key(store, None)
    assert token is not None
    key = store.authenticate(token)
    assert key is not None and key.role == "admin" and key.project is None
    assert bootstrap_admin_key(store, None) is None  # shown once, never again
    store.revoke_api_key(key.id)
    assert bootstrap_admin_key(store, None) is None  # revoking it does not mint a new one


def test_configured_admin_key_is_taken_as_given(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    secret = "a-secret-from-the-vault-0123456789"
    assert bootstrap_admin_key(store, secret) is None
    key = store.authenticate(secret)
    assert key is not None and key.role == "admin" and key.project is None
    assert bootstrap_admin_key(store, secret) is None  # idempotent across restarts
    assert store.count_api_keys() == 1
