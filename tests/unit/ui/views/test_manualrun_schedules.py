"""The pure parts of the manual run and schedules views: form values from a generated form,
the API's problems placed by field, the values a form shows, and a schedule's next times."""

from __future__ import annotations

import time

from starlette.datastructures import FormData

from fxray.api.errors import ApiError
from fxray.events.schedules import next_fire_times
from fxray.services import Parameter
from fxray.store.schedules import ScheduleRecord
from fxray.ui.views.manualrun import _fields, _FormProblem, _problems, _values
from fxray.ui.views.schedules import _next_times

FIELDS = [
    Parameter(name="count", type="int", required=True),
    Parameter(name="express", type="bool", default=False),
    Parameter(name="extras", type="multiselect", choices=["gift", 2]),
]


def test_form_values_keep_text_and_lists_for_the_platform_to_coerce() -> None:
    form = FormData([("p.count", "3"), ("p.extras", "gift"), ("p.extras", "2"), ("x", "y")])
    assert _values(form, FIELDS) == {"count": "3", "express": "", "extras": ["gift", "2"]}


def test_a_service_without_parameters_takes_a_json_object() -> None:
    assert _values(FormData([("params", '{"a": 1}')]), None) == {"a": 1}
    assert _values(FormData([]), None) == {}
    for bad in ("[1]", "{nope"):
        try:
            _values(FormData([("params", bad)]), None)
        except _FormProblem as problem:
            assert problem.others and problem.others[0].startswith("params:")
        else:
            raise AssertionError(f"{bad!r} was accepted")


def test_api_problems_go_next_to_their_fields() -> None:
    error = ApiError(
        422,
        "the parameters are invalid",
        [
            {"location": "body.params.count", "message": "expected an integer, got 'x'"},
            {"location": "body.params", "message": "nope: unknown parameter"},
        ],
    )
    problem = _problems(error)
    assert problem.by_field == {"count": ["expected an integer, got 'x'"]}
    assert problem.others == ["nope: unknown parameter"]
    assert _problems(ApiError(422, "bad version")).others == ["bad version"]


def test_fields_show_given_values_else_defaults_as_text() -> None:
    shown = {f["field"].name: f for f in _fields(FIELDS, {"extras": ["gift", 2]})}
    assert shown["count"]["value"] == "" and shown["count"]["default"] is None
    assert shown["express"]["value"] == "false" and shown["express"]["default"] == "false"
    assert shown["extras"]["chosen"] == ["gift", "2"]
    assert shown["extras"]["choices"] == ["gift", "2"]


def _schedule(active: bool = True, skip_next: bool = False) -> ScheduleRecord:
    now = time.time()
    first = next_fire_times("0 3 1 1 *", now, 1)[0]
    return ScheduleRecord(
        "s1", "svc", "0 3 1 1 *", {}, "api", active, first, skip_next, None, now, now
    )


def test_next_times_skip_the_skipped_tick_and_stop_while_paused() -> None:
    plain = _schedule()
    times, skipped = _next_times(plain)
    assert skipped is None and times[0] == plain.next_fire_at and len(times) == 5
    skipping = _schedule(skip_next=True)
    times, skipped = _next_times(skipping)
    assert skipped == skipping.next_fire_at and times[0] > skipped and len(times) == 5
    assert _next_times(_schedule(active=False)) == ([], None)
