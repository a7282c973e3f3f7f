"""Run ids: a redelivered event names the same run, and the fast derivation is uuid5."""

from __future__ import annotations

import random
import uuid

from fxray.router.routing import RUN_NAMESPACE, run_id_for


def test_run_ids_are_uuid5_of_event_and_trigger() -> None:
    rng = random.Random(7)
    alphabet = "abz09-_.:/é\x00\U0001f600"
    for _ in range(5000):
        event_id = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        trigger_id = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        expected = uuid.uuid5(RUN_NAMESPACE, f"{event_id}\x00{trigger_id}")
        got = run_id_for(event_id, trigger_id)
        assert got == str(expected)
        assert uuid.UUID(got).version == 5


def test_run_ids_differ_per_trigger_and_repeat_per_event() -> None:
    assert run_id_for("e1", "t1") == run_id_for("e1", "t1")
    assert len({run_id_for("e1", "t1"), run_id_for("e1", "t2"), run_id_for("e2", "t1")}) == 3
