"""The flow map draws at most MAX_EDGES edges: failing ones first, then the busiest."""

from __future__ import annotations

import pytest

from fxray.ui import queries as uq
from fxray.ui.views import flowmap


def _edge(n: int, runs: int, errors: int = 0) -> uq.FlowEdge:
    return uq.FlowEdge(None, f"t{n}", f"s{n}", runs, errors, 0)


def test_a_small_map_keeps_every_edge() -> None:
    edges = [_edge(n, n) for n in range(5)]
    assert flowmap._busiest(edges) == (edges, 0)


def test_a_large_map_keeps_failing_then_busiest_edges_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flowmap, "MAX_EDGES", 3)
    edges = [_edge(0, 1), _edge(1, 50), _edge(2, 2, errors=1), _edge(3, 40), _edge(4, 5)]
    kept, hidden = flowmap._busiest(edges)
    assert [e.event_type for e in kept] == ["t1", "t2", "t3"]  # the map's order kept
    assert hidden == 2
