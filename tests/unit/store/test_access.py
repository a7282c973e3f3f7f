"""Projects, API keys, webhooks and the project of each service."""

from __future__ import annotations

import time

import pytest

from fxray.store import Conflict, NotFound, StateStore


def test_projects(store: StateStore) -> None:
    assert [p.name for p in store.list_projects()] == ["default"]
    created = store.create_project("shop", "the shop")
    assert (created.name, created.description) == ("shop", "the shop")
    assert store.get_project("shop") == created
    assert [p.name for p in store.list_projects()] == ["default", "shop"]
    with pytest.raises(Conflict):
        store.create_project("shop")
    with pytest.raises(NotFound):
        store.get_project("nope")
    store.delete_project("shop")
    assert [p.name for p in store.list_projects()] == ["default"]
    with pytest.raises(NotFound):
        store.delete_project("shop")
    with pytest.raises(Conflict):
        store.delete_project("default")


def test_services_belong_to_projects(store: StateStore) -> None:
    store.create_project("shop")
    store.upsert_service("a")
    store.upsert_service("b", project="shop")
    assert store.get_service("a").project == "default"
    assert [s.name for s in store.list_services(project="shop")] == ["b"]
    assert [s.name for s in store.list_services()] == ["a", "b"]
    with pytest.raises(NotFound):
        store.upsert_service("c", project="nope")
    changed = store.upsert_service("b", project="shop", description="changed")
    assert (changed.id, changed.project, changed.description) == ("shop.b", "shop", "changed")
    with pytest.raises(Conflict):
        store.delete_project("shop")  # still has a service
    before = store.revision()
    moved = store.set_service_project("shop.b", "default")  # keeps its id
    assert (moved.id, moved.project) == ("shop.b", "default") and store.revision() > before
    assert store.routing_snapshot().services["shop.b"].project == "default"
    assert store.find_service("default", "b").id == "shop.b"
    with pytest.raises(NotFound):
        store.set_service_project("shop.b", "nope")
    with pytest.raises(NotFound):
        store.set_service_project("nope", "shop")
    store.delete_project("shop")


def test_names_are_unique_within_a_project_ids_on_the_platform(store: StateStore) -> None:
    store.create_project("shop")
    default = store.upsert_service("orders")
    shop = store.upsert_service("orders", project="shop")
    assert (default.id, default.project) == ("orders", "default")
    assert (shop.id, shop.project, shop.name) == ("shop.orders", "shop", "orders")
    assert store.upsert_service("orders", project="shop", priority=2).id == "shop.orders"
    assert [s.id for s in store.services_named("orders")] == ["orders", "shop.orders"]
    assert store.find_service("shop", "orders") == store.get_service("shop.orders")
    with pytest.raises(NotFound):
        store.find_service("shop", "nope")
    store.upsert_service("invoices", project="shop")
    with pytest.raises(Conflict):  # the default project has an "orders" already
        store.set_service_project("shop.orders", "default")
    moved = store.set_service_project("shop.invoices", "default")
    assert moved.id == "shop.invoices"  # a moved service keeps its id...
    again = store.upsert_service("invoices", project="shop")
    assert again.id == "shop.invoices+2"  # ...so a new one of its old name takes another
    assert len({s.id for s in store.list_services()}) == len(store.list_services()) == 4


def test_api_keys(store: StateStore) -> None:
    store.create_project("shop")
    admin, admin_token = store.create_api_key("root", "admin", None)
    dev, dev_token = store.create_api_key("ci", "developer", "shop")
    assert admin_token.startswith(f"fxk_{admin.id}_") and len(admin_token) > 40
    assert (dev.project, dev.role, dev.name, dev.revoked, dev.last_used_at) == (
        "shop", "developer", "ci", False, None
    )  # fmt: skip
    assert store.count_api_keys() == 2
    assert [k.id for k in store.list_api_keys()] == [admin.id, dev.id]
    assert [k.id for k in store.list_api_keys("shop")] == [dev.id]

    seen = store.authenticate(dev_token)
    assert seen is not None and seen.id == dev.id and seen.last_used_at is not None
    assert store.list_api_keys("shop")[0].last_used_at == seen.last_used_at
    again = store.authenticate(dev_token)  # within the minute: last_used_at is kept
    assert again is not None and again.last_used_at == seen.last_used_at
    assert store.authenticate(dev_token + "x") is None
    assert store.authenticate("not-a-key") is None
    assert store.authenticate("") is None

    revoked = store.revoke_api_key(dev.id)
    assert revoked.revoked
    assert store.authenticate(dev_token) is None
    assert store.authenticate(admin_token) is not None
    assert store.count_api_keys() == 2  # revoking the last key does not reopen anything
    assert store.count_api_keys(active_only=True) == 1
    with pytest.raises(NotFound):
        store.revoke_api_key("nope")
    with pytest.raises(ValueError):
        store.create_api_key("x", "superuser", None)
    with pytest.raises(NotFound):
        store.create_api_key("x", "viewer", "nope")


def test_last_used_is_refreshed_after_a_minute(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = store.create_api_key("k", "viewer", "default")
    first = store.authenticate(token)
    assert first is not None and first.last_used_at is not None
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    second = store.authenticate(token)
    assert second is not None and second.last_used_at == later
    assert store.list_api_keys()[0].last_used_at == later


def test_webhooks(store: StateStore) -> None:
    store.create_project("shop")
    hook, secret = store.create_webhook("shop", "stripe", "payments.received", "stripe")
    other, other_secret = store.create_webhook("default", "gh", "git.pushed")
    assert not hasattr(hook, "secret") and len(secret) >= 40 and secret != other_secret
    assert (hook.project, hook.name, hook.event_type, hook.source, hook.active) == (
        "shop", "stripe", "payments.received", "stripe", True
    )  # fmt: skip
    assert other.source == f"fxray/webhooks/{other.id}"
    assert store.get_webhook(hook.id) == hook
    assert store.webhook_secret(hook.id) == secret
    assert [w.id for w in store.list_webhooks()] == [hook.id, other.id]
    assert [w.id for w in store.list_webhooks("shop")] == [hook.id]
    store.delete_webhook(hook.id)
    for call in (store.get_webhook, store.webhook_secret, store.delete_webhook):
        with pytest.raises(NotFound):
            call(hook.id)
    with pytest.raises(NotFound):
        store.create_webhook("nope", "x", "y")


def test_deleting_a_project_deletes_its_keys_webhooks_and_mappings(store: StateStore) -> None:
    store.create_project("tmp")
    _, token = store.create_api_key("k", "admin", "tmp")
    store.create_webhook("tmp", "w", "a.b")
    store.add_mapping("tmp", "a.b", "c.d", [], True)
    before = store.revision()
    store.delete_project("tmp")
    assert store.authenticate(token) is None
    assert store.list_webhooks() == [] and store.list_mappings() == []
    assert store.revision() > before
    store.create_project("tmp")  # a new project of the same name inherits nothing
    assert store.list_api_keys("tmp") == []


def test_imported_keys(store: StateStore) -> None:
    configured = "a-configured-admin-key-from-a-secret"
    assert store.authenticate(configured) is None
    key = store.import_api_key(configured, "bootstrap admin", "admin", None)
    assert (key.role, key.project, key.name) == ("admin", None, "bootstrap admin")
    seen = store.authenticate(configured)
    assert seen is not None and seen.id == key.id
    with pytest.raises(Conflict):
        store.import_api_key(configured, "again", "admin", None)
    shaped = store.import_api_key("fxk_abc123_" + "s" * 43, "shaped", "viewer", "default")
    assert shaped.id == "abc123"
    clash = store.import_api_key("fxk_abc123_" + "t" * 43, "clash", "viewer", "default")
    assert clash.id != "abc123"
    with pytest.raises(ValueError):
        store.import_api_key("short", "x", "admin", None)
    with pytest.raises(ValueError):
        store.import_api_key("x" * 40, "x", "root", None)
    with pytest.raises(NotFound):
        store.import_api_key("y" * 40, "x", "admin", "nope")
    assert store.count_api_keys() == 3
