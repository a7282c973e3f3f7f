"""Mappings between event types, and their place in the routing snapshot."""

from __future__ import annotations

import pytest

from fxray.store import NotFound, StateStore

FIELDS = [{"from": "a.b", "to": "c", "op": "rename"}, {"from": "x", "to": "y", "op": "copy"}]


def test_mappings(store: StateStore) -> None:
    store.create_project("shop")
    start = store.revision()
    first = store.add_mapping("shop", "order.created", "invoice.requested", FIELDS, False)
    assert store.revision() == start + 1
    second = store.add_mapping("default", "order.created", "audit.logged", [], True)
    third = store.add_mapping("default", "user.joined", "crm.contact", [], True)
    assert (first.fields, first.map_all, first.active) == (FIELDS, False, True)
    assert store.get_mapping(first.id) == first
    assert [m.id for m in store.list_mappings()] == [first.id, second.id, third.id]
    assert [m.id for m in store.list_mappings(project="default")] == [second.id, third.id]
    assert [m.id for m in store.list_mappings(source_type="order.created")] == [
        first.id,
        second.id,
    ]
    assert [m.id for m in store.list_mappings("default", "user.joined")] == [third.id]

    changed = store.update_mapping(first.id, target_type="bill.requested", fields=[], active=False)
    assert (changed.target_type, changed.fields, changed.active) == ("bill.requested", [], False)
    assert changed.updated_at >= first.updated_at
    assert store.revision() == start + 4
    snapshot = store.routing_snapshot()
    assert [m.id for m in snapshot.mappings] == [second.id, third.id]  # active ones only

    with pytest.raises(ValueError):
        store.update_mapping(first.id, project="shop")
    with pytest.raises(NotFound):
        store.update_mapping("nope", active=True)
    store.remove_mapping(first.id)
    assert store.revision() == start + 5
    with pytest.raises(NotFound):
        store.remove_mapping(first.id)
    with pytest.raises(NotFound):
        store.get_mapping(first.id)
    with pytest.raises(NotFound):
        store.add_mapping("nope", "a", "b", [], True)
