"""Templates: autoescape everywhere (markup in data is shown as text), nothing marked safe, and
nothing the Content-Security-Policy would block (inline scripts, style or event attributes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fxray.ui.templating import TEMPLATES, make_environment, query, render_fragment

ALL = sorted(TEMPLATES.rglob("*.html"))
PAYLOAD = '<script>window.__pwned=1</script><img src=x onerror="alert(1)">'


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_no_template_marks_data_safe_or_needs_inline_code(path: Path) -> None:
    text = path.read_text()
    assert "|safe" not in text.replace(" ", "") and "autoescape false" not in text
    assert "Markup(" not in text
    assert not re.search(r"<script(?![^>]*\bsrc=)", text), "inline script"
    assert not re.search(r"\sstyle=", text), "style attribute (CSP style-src 'self')"
    assert not re.search(r"\son[a-z]+=", text), "event handler attribute"
    assert "hx-on" not in text and "javascript:" not in text


def test_a_log_line_with_markup_renders_as_text() -> None:
    env = make_environment()
    line = {"time": 0.0, "level": "INFO", "step": PAYLOAD, "message": PAYLOAD}
    html = render_fragment(env, "runs/_log_line.html", {"line": line})
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "onerror=&#34;alert(1)&#34;" in html


def test_the_environment_escapes_every_template_even_strings() -> None:
    env = make_environment()
    assert env.from_string("{{ x }}").render(x=PAYLOAD).startswith("&lt;script&gt;")
    assert "&lt;" in env.from_string("{{ x | pretty_json }}").render(x={"k": PAYLOAD})


def test_query_strings_are_encoded() -> None:
    assert query({"a": "x y", "b": None, "c": ""}, d=["1", "2"]) == "?a=x+y&d=1&d=2"
    assert query({}) == ""
    assert query({"next": '"><script>'}) == "?next=%22%3E%3Cscript%3E"
