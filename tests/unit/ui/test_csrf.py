"""CSRF: the session's token in a header or form field, and never from another site."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import pytest
from starlette.requests import Request

from fxray.ui import csrf


def _request(
    headers: dict[str, str] | None = None, body: bytes = b"", method: str = "POST"
) -> Request:
    raw = [
        (k.lower().encode(), v.encode()) for k, v in {"host": "ui.test", **(headers or {})}.items()
    ]
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": method, "path": "/x", "headers": raw, "scheme": "http"}
    return Request(scope, receive)


def _check(request: Request, expected: str | None = "tok") -> None:
    asyncio.run(csrf.check(request, expected))


def test_the_header_token_passes() -> None:
    _check(_request({csrf.CSRF_HEADER: "tok"}))


def test_the_form_field_passes() -> None:
    body = urlencode({"csrf_token": "tok", "x": "1"}).encode()
    _check(_request({"content-type": "application/x-www-form-urlencoded"}, body))


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, b""),  # no token at all
        ({csrf.CSRF_HEADER: "other"}, b""),  # a wrong token
        ({"content-type": "application/x-www-form-urlencoded"}, b"csrf_token=nope"),
        ({"content-type": "application/json"}, b'{"csrf_token": "tok"}'),  # not a form
    ],
)
def test_a_missing_or_wrong_token_is_refused(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(csrf.CsrfRefused):
        _check(_request(headers, body))


def test_no_session_token_refuses_everything() -> None:
    with pytest.raises(csrf.CsrfRefused):
        _check(_request({csrf.CSRF_HEADER: ""}), expected="")


@pytest.mark.parametrize(
    ("headers", "same"),
    [
        ({}, True),
        ({"origin": "http://ui.test"}, True),
        ({"origin": "https://ui.test"}, True),  # TLS ended at a proxy: same host
        ({"origin": "http://evil.test"}, False),
        ({"origin": "null"}, False),
        ({"sec-fetch-site": "same-origin"}, True),
        ({"sec-fetch-site": "none"}, True),  # typed into the address bar
        ({"sec-fetch-site": "cross-site"}, False),
        ({"sec-fetch-site": "same-site"}, False),  # a sibling subdomain is another site here
    ],
)
def test_requests_from_another_site_are_refused(headers: dict[str, str], same: bool) -> None:
    request = _request({csrf.CSRF_HEADER: "tok", **headers})
    assert csrf.same_site(request) is same
    if same:
        _check(request)
    else:
        with pytest.raises(csrf.CsrfRefused):
            _check(request)


def test_tokens_are_compared_whole() -> None:
    assert csrf.tokens_match("abc", "abc")
    assert not csrf.tokens_match("abc", "ab")
    assert not csrf.tokens_match(None, "abc")
    assert not csrf.tokens_match("abc", None)
