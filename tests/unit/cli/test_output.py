"""The CLI's one JSON reader: clear usage errors, never a traceback."""

from __future__ import annotations

import pytest

from fxray.cli.output import UsageProblem, loads_json


def test_json_nested_past_the_parser_is_a_usage_problem() -> None:
    with pytest.raises(UsageProblem, match="--data is nested too deeply to read"):
        loads_json("[" * 100_000 + "]" * 100_000, "--data")


def test_bad_json_names_the_line_and_column() -> None:
    with pytest.raises(UsageProblem, match=r"--data is not valid JSON \(line 1, column 2"):
        loads_json("{x", "--data")
    assert loads_json('{"a": [1]}', "--data") == {"a": [1]}
