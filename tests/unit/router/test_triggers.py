"""Trigger matching, filters and weighted version choice over a hand-built routing snapshot."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxray.router.triggers import (
    TriggerTable,
    choose_version,
    filters_match,
    is_glob,
    lookup,
    validate_pattern,
    validate_weights,
)
from fxray.store.records import RoutingSnapshot, ServiceRecord, TriggerRecord, VersionRecord

# --------------------------------------------------------------------------- helpers


def service_record(name: str, *, active: bool = True) -> ServiceRecord:
    return ServiceRecord(
        id=name,
        name=name,
        description="",
        tags=[],
        active=active,
        allow_manual_triggering=True,
        priority=5,
        schedule=None,
        max_concurrency=None,
        created_at=0.0,
        updated_at=0.0,
    )


def version_record(version_id: str) -> VersionRecord:
    service, _, content_hash = version_id.partition("@")
    return VersionRecord(
        id=version_id,
        service=service,
        content_hash=content_hash,
        label=None,
        manifest={"execution_order": ["main.py"]},
        requirements=[],
        requirements_hash="",
        deployed_by=None,
        created_at=0.0,
    )


def trigger_record(
    trigger_id: str,
    pattern: str,
    service: str,
    *,
    filters: dict[str, str] | None = None,
    weights: dict[str, int] | None = None,
    active: bool = True,
) -> TriggerRecord:
    return TriggerRecord(
        id=trigger_id,
        pattern=pattern,
        service=service,
        filters=filters or {},
        weights=weights or {},
        shadow_version=None,
        ordered=False,
        active=active,
        created_at=0.0,
        updated_at=0.0,
    )


def make_snapshot(
    versions: Mapping[str, list[str]],
    triggers: Iterable[TriggerRecord],
    *,
    inactive: Iterable[str] = (),
    revision: int = 1,
) -> RoutingSnapshot:
    """``versions`` maps each service to its version ids, oldest first (the last is latest)."""
    off = set(inactive)
    snap = RoutingSnapshot(revision=revision)
    for name, ids in versions.items():
        snap.services[name] = service_record(name, active=name not in off)
        for version_id in ids:
            snap.versions[version_id] = version_record(version_id)
        if ids:
            snap.latest[name] = ids[-1]
    snap.triggers.extend(triggers)
    return snap


def event(type_: str, data: Any = None, **attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": attrs.pop("id", str(uuid.uuid4())),
        "source": attrs.pop("source", "test"),
        "type": type_,
        **attrs,
    }
    if data is not None:
        body["data"] = data
    return body


def matched(table: TriggerTable, ev: Mapping[str, Any]) -> set[str]:
    return {m.trigger.id for m in table.match(ev)}


def one_trigger_table(pattern: str, **kwargs: Any) -> TriggerTable:
    return TriggerTable(
        make_snapshot({"svc": ["svc@1"]}, [trigger_record("t", pattern, "svc", **kwargs)])
    )


# --------------------------------------------------------------------------- patterns


def test_is_glob() -> None:
    assert not is_glob("orders.created")
    assert is_glob("orders.*")
    assert is_glob("order?.created")
    assert is_glob("orders.[cu]*")


@pytest.mark.parametrize(
    ("event_type", "hit"),
    [
        ("orders.created", True),
        ("orders.created.v2", False),
        ("orders.create", False),
        ("xorders.created", False),
        ("Orders.created", False),
        ("", False),
    ],
)
def test_exact_match(event_type: str, hit: bool) -> None:
    table = one_trigger_table("orders.created")
    assert bool(table.match(event(event_type))) is hit


@pytest.mark.parametrize(
    ("pattern", "event_type", "hit"),
    [
        ("orders.*", "orders.created", True),
        ("orders.*", "orders.cancelled", True),
        ("orders.*", "orders.", True),
        ("orders.*", "orders", False),
        ("orders.*", "order.created", False),
        ("orders.*", "shop.orders.created", False),
        ("orders.*", "Orders.created", False),
        ("*.failed", "payments.failed", True),
        ("*.failed", "a.b.failed", True),
        ("*.failed", "failed", False),
        ("*.failed", "payments.failed.retry", False),
        ("*.failed", "payments.failedx", False),
        ("order?.created", "orders.created", True),
        ("order?.created", "order1.created", True),
        ("order?.created", "order.created", False),
        ("order?.created", "orders1.created", False),
        ("orders.[cu]*", "orders.created", True),
        ("orders.[cu]*", "orders.updated", True),
        ("orders.[cu]*", "orders.deleted", False),
    ],
)
def test_glob_match(pattern: str, event_type: str, hit: bool) -> None:
    table = one_trigger_table(pattern)
    assert bool(table.match(event(event_type))) is hit


def test_one_event_matches_several_triggers() -> None:
    triggers = [
        trigger_record("exact", "orders.created", "billing"),
        trigger_record("glob", "orders.*", "audit"),
        trigger_record("star", "*", "firehose"),
        trigger_record("other", "payments.*", "billing"),
        trigger_record("second", "*.created", "billing"),
    ]
    snap = make_snapshot(
        {"billing": ["billing@1"], "audit": ["audit@1"], "firehose": ["firehose@1"]}, triggers
    )
    matches = TriggerTable(snap).match(event("orders.created"))
    assert sorted(m.trigger.id for m in matches) == ["exact", "glob", "second", "star"]
    by_trigger = {m.trigger.id: m.version_id for m in matches}
    assert by_trigger == {
        "exact": "billing@1",
        "glob": "audit@1",
        "star": "firehose@1",
        "second": "billing@1",
    }


def test_several_exact_triggers_on_one_type() -> None:
    snap = make_snapshot(
        {"a": ["a@1"], "b": ["b@1"]},
        [trigger_record("t1", "x.y", "a"), trigger_record("t2", "x.y", "b")],
    )
    assert matched(TriggerTable(snap), event("x.y")) == {"t1", "t2"}


def test_no_match_returns_empty_list() -> None:
    table = one_trigger_table("orders.*")
    assert table.match(event("payments.created")) == []
    assert table.match({}) == []


def test_inactive_trigger_skipped() -> None:
    snap = make_snapshot(
        {"svc": ["svc@1"]},
        [
            trigger_record("off", "orders.created", "svc", active=False),
            trigger_record("off-glob", "orders.*", "svc", active=False),
            trigger_record("on", "orders.*", "svc"),
        ],
    )
    assert matched(TriggerTable(snap), event("orders.created")) == {"on"}


def test_inactive_service_skipped() -> None:
    snap = make_snapshot(
        {"paused": ["paused@1"], "live": ["live@1"]},
        [trigger_record("t1", "orders.*", "paused"), trigger_record("t2", "orders.*", "live")],
        inactive=["paused"],
    )
    assert matched(TriggerTable(snap), event("orders.created")) == {"t2"}


def test_unknown_service_and_missing_versions_skipped() -> None:
    snap = make_snapshot(
        {"noversions": [], "svc": ["svc@1"]},
        [
            trigger_record("ghost", "a.b", "deleted-service"),
            trigger_record("empty", "a.b", "noversions"),
            trigger_record("stale-weight", "a.b", "svc", weights={"svc@gone": 10}),
            trigger_record("ok", "a.b", "svc"),
        ],
    )
    assert matched(TriggerTable(snap), event("a.b")) == {"ok"}


def test_revision_exposed() -> None:
    assert TriggerTable(make_snapshot({}, [], revision=42)).revision == 42


def test_no_weights_routes_to_latest_version() -> None:
    snap = make_snapshot({"svc": ["svc@old", "svc@new"]}, [trigger_record("t", "a.b", "svc")])
    matches = TriggerTable(snap).match(event("a.b"))
    assert [m.version_id for m in matches] == ["svc@new"]


def test_match_is_stable_for_a_redelivered_event() -> None:
    snap = make_snapshot(
        {"svc": ["svc@a", "svc@b"]},
        [trigger_record("t", "a.b", "svc", weights={"svc@a": 50, "svc@b": 50})],
    )
    table = TriggerTable(snap)
    for _ in range(50):
        ev = event("a.b")
        first = table.match(ev)[0].version_id
        assert all(table.match(dict(ev))[0].version_id == first for _ in range(5))


# --------------------------------------------------------------------------- filters


def test_filter_on_attribute_with_glob() -> None:
    table = one_trigger_table("orders.*", filters={"source": "shop/*"})
    assert table.match(event("orders.created", source="shop/eu"))
    assert not table.match(event("orders.created", source="warehouse/eu"))


def test_filter_on_extension_attribute() -> None:
    table = one_trigger_table("orders.*", filters={"tenant": "acme"})
    assert table.match(event("orders.created", tenant="acme"))
    assert not table.match(event("orders.created", tenant="other"))
    assert not table.match(event("orders.created"))


def test_filter_on_nested_data_path() -> None:
    table = one_trigger_table("orders.*", filters={"data.customer.country": "CH"})
    assert table.match(event("orders.created", {"customer": {"country": "CH"}}))
    assert not table.match(event("orders.created", {"customer": {"country": "DE"}}))


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"customer": {}},
        {"customer": None},
        {"customer": "CH"},
        {"customer": ["CH"]},
        {"country": "CH"},
        "CH",
    ],
)
def test_filter_missing_field_is_no_match(data: Any) -> None:
    for pattern in ("CH", "*"):
        table = one_trigger_table("orders.*", filters={"data.customer.country": pattern})
        assert not table.match(event("orders.created", data)), (data, pattern)


def test_filter_glob_values() -> None:
    table = one_trigger_table("a.b", filters={"data.country": "C?", "data.sku": "ABC-*"})
    assert table.match(event("a.b", {"country": "CH", "sku": "ABC-123"}))
    assert table.match(event("a.b", {"country": "CZ", "sku": "ABC-"}))
    assert not table.match(event("a.b", {"country": "CHE", "sku": "ABC-1"}))
    assert not table.match(event("a.b", {"country": "ch", "sku": "ABC-1"}))  # case-sensitive


def test_filters_are_all_required() -> None:
    table = one_trigger_table("a.b", filters={"source": "shop", "data.country": "CH"})
    assert table.match(event("a.b", {"country": "CH"}, source="shop"))
    assert not table.match(event("a.b", {"country": "DE"}, source="shop"))
    assert not table.match(event("a.b", {"country": "CH"}, source="other"))


@pytest.mark.parametrize(
    ("value", "pattern", "hit"),
    [
        (True, "true", True),
        (False, "false", True),
        (True, "True", False),
        (False, "False", False),
        (False, "*", True),
        (42, "42", True),
        (42, "4*", True),
        (0, "0", True),
        (1.5, "1.5", True),
        ("", "", True),
        ("", "*", True),
    ],
)
def test_filter_value_rendering(value: Any, pattern: str, hit: bool) -> None:
    assert filters_match({"data.v": pattern}, event("a.b", {"v": value})) is hit


def test_lookup() -> None:
    ev = event("a.b", {"a": {"b": {"c": 1}}}, source="s")
    assert lookup(ev, "source") == "s"
    assert lookup(ev, "data.a.b.c") == 1
    assert lookup(ev, "data.a.b") == {"c": 1}
    assert lookup(ev, "data.a.x") is None
    assert lookup(ev, "nope") is None


# --------------------------------------------------------------------------- choose_version


def test_no_weights_gives_latest() -> None:
    assert choose_version("e1", "t1", {}, "svc@3") == "svc@3"
    assert choose_version("e1", "t1", {}, None) is None


def test_single_weight_always_wins() -> None:
    for i in range(200):
        assert choose_version(f"e{i}", "t1", {"svc@a": 7}, "svc@latest") == "svc@a"


def test_zero_weights_ignored() -> None:
    for i in range(200):
        assert choose_version(f"e{i}", "t", {"svc@a": 0, "svc@b": 3}, "svc@c") == "svc@b"
    assert choose_version("e", "t", {"svc@a": 0, "svc@b": 0}, "svc@c") == "svc@c"


def test_choice_is_deterministic_in_event_and_trigger() -> None:
    weights = {"svc@a": 50, "svc@b": 50}
    for i in range(200):
        first = choose_version(f"event-{i}", "trigger-1", weights, None)
        assert all(
            choose_version(f"event-{i}", "trigger-1", weights, None) == first for _ in range(3)
        )
        # insertion order of the weights does not matter
        assert (
            choose_version(f"event-{i}", "trigger-1", dict(reversed(weights.items())), None)
            == first
        )


def test_trigger_id_is_part_of_the_hash() -> None:
    weights = {"svc@a": 50, "svc@b": 50}
    ids = [str(uuid.uuid4()) for _ in range(500)]
    one = [choose_version(i, "t1", weights, None) for i in ids]
    two = [choose_version(i, "t2", weights, None) for i in ids]
    assert one != two


@pytest.mark.parametrize(
    "weights",
    [
        {"svc@a": 70, "svc@b": 30},
        {"svc@a": 90, "svc@b": 10},
        {"svc@a": 50, "svc@b": 30, "svc@c": 20},
        {"svc@a": 7, "svc@b": 3},  # weights need not sum to 100
    ],
)
def test_weights_split_10000_random_events(weights: dict[str, int]) -> None:
    n = 10_000
    counts = Counter(
        choose_version(str(uuid.uuid4()), "trigger-1", weights, None) for _ in range(n)
    )
    total = sum(weights.values())
    assert set(counts) == set(weights)
    for version, weight in weights.items():
        share = 100.0 * counts[version] / n
        expected = 100.0 * weight / total
        assert abs(share - expected) <= 3.0, (version, share, expected)


def test_weights_split_through_trigger_table() -> None:
    snap = make_snapshot(
        {"svc": ["svc@a", "svc@b"]},
        [trigger_record("t", "a.b", "svc", weights={"svc@a": 70, "svc@b": 30})],
    )
    table = TriggerTable(snap)
    counts = Counter(table.match(event("a.b"))[0].version_id for _ in range(10_000))
    assert abs(counts["svc@a"] / 100.0 - 70.0) <= 3.0


@settings(database=None)
@given(
    weights=st.dictionaries(
        st.text(min_size=1, max_size=5), st.integers(min_value=0, max_value=100), max_size=5
    ),
    event_id=st.text(max_size=20),
    trigger_id=st.text(max_size=20),
)
def test_choice_only_picks_positive_weights(
    weights: dict[str, int], event_id: str, trigger_id: str
) -> None:
    chosen = choose_version(event_id, trigger_id, weights, "LATEST")
    if any(w > 0 for w in weights.values()):
        assert weights.get(chosen, 0) > 0
    else:
        assert chosen == "LATEST"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 256, "255"),
        ("orders created", "white space"),
        ("orders.*\t", "white space"),
        ("a\nb", "white space"),
    ],
)
def test_validate_pattern_errors(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_pattern(pattern)


@pytest.mark.parametrize("pattern", ["orders.created", "orders.*", "*", "x" * 255, "a?[bc]"])
def test_validate_pattern_ok(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"svc@a": -1}, "svc@a"),
        ({"svc@a": 1.5}, "whole number"),
        ({"svc@a": "50"}, "whole number"),
        ({"svc@a": True}, "whole number"),
        ({"svc@a": None}, "whole number"),
        ({"svc@a": 0}, "above 0"),
        ({"svc@a": 0, "svc@b": 0}, "above 0"),
    ],
)
def test_validate_weights_errors(weights: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_weights(weights)


def test_validate_weights_reports_every_problem() -> None:
    with pytest.raises(ValueError) as info:
        validate_weights({"svc@a": -1, "svc@b": "x", "svc@c": 10})
    assert "svc@a" in str(info.value)
    assert "svc@b" in str(info.value)
    assert "svc@c" not in str(info.value)


def test_validate_weights_ok() -> None:
    assert validate_weights({}) == {}
    assert validate_weights({"svc@a": 90, "svc@b": 10, "svc@c": 0}) == {
        "svc@a": 90,
        "svc@b": 10,
        "svc@c": 0,
    }
