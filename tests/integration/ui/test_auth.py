"""Sign-in and its safety in a real browser: the key starts a cookie session, sign-out and a
revoked key end it, and a state-changing request without the CSRF token is refused."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.integration.ui.conftest import UIServer, csrf_token, screenshot, sign_in


def test_sign_in_with_a_key_and_sign_out(ui_server: UIServer, page: Page) -> None:
    page.goto(f"{ui_server.url}/runs?status=failed")
    expect(page).to_have_url(f"{ui_server.url}/signin?next=%2Fruns%3Fstatus%3Dfailed")
    page.get_by_label("API key").fill("fxk_not_a_key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    expect(page.get_by_label("API key")).to_be_focused()
    screenshot(page, "signin")

    page.get_by_label("API key").fill(ui_server.admin)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{ui_server.url}/runs?status=failed")  # back where it began
    cookie = next(c for c in page.context.cookies() if c["name"] == "fxray_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["expires"] > 0  # a session with an end, not a browser-lifetime cookie
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{ui_server.url}/signin")
    # the old cookie is dead on the server too, not only forgotten by this browser
    page.context.add_cookies([cookie])
    page.goto(f"{ui_server.url}/services")
    expect(page).to_have_url(f"{ui_server.url}/signin?next=%2Fservices")


def test_a_revoked_key_ends_its_session(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    sign_in(page, ui_server, keys.developer)
    store = ui_server.platform.store
    assert store is not None
    key_id = next(k.id for k in store.list_api_keys(keys.project) if k.role == "developer")
    store.revoke_api_key(key_id)
    page.goto(f"{ui_server.url}/services")
    expect(page).to_have_url(f"{ui_server.url}/signin?next=%2Fservices")


def test_a_forged_form_without_the_csrf_token_is_refused(
    ui_server: UIServer, new_page: Callable[..., Page]
) -> None:
    keys = ui_server.project()
    service = ui_server.deploy(keys, "forged", {"main.py": "print('hi')\n"})
    page = new_page()
    sign_in(page, ui_server, keys.developer)
    page.goto(f"{ui_server.url}/services/{service}")
    target = f"{ui_server.url}/services/{service}/active"
    # the browser sends the session cookie; the form lacks (or fakes) the token
    assert page.request.post(target, form={"active": "false"}).status == 403
    fake = {"active": "false", "csrf_token": "x" * 43}
    assert page.request.post(target, form=fake).status == 403
    other_site = page.request.post(
        target,
        form={"active": "false", "csrf_token": csrf_token(page)},
        headers={"Origin": "http://evil.example"},
    )
    assert other_site.status == 403
    assert ui_server.platform.store.get_service(service).active  # type: ignore[union-attr]
    # the same request with the page's token goes through
    genuine = page.request.post(target, form={"active": "false", "csrf_token": csrf_token(page)})
    assert genuine.ok
    assert not ui_server.platform.store.get_service(service).active  # type: ignore[union-attr]
    # sign-out is a change too: a forged one does not end the session
    assert page.request.post(f"{ui_server.url}/signout").status == 403
    page.goto(f"{ui_server.url}/services")
    expect(page).to_have_url(f"{ui_server.url}/services")
