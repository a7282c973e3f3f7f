"""The services views in a real browser: the list, uploading a service through the form, a
service's page and its actions, what a viewer and another project see, and markup that stays
text."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from fxray.kv import get_json, secrets_key
from tests.integration.ui.conftest import (
    TABLET,
    UIServer,
    csrf_token,
    screenshot,
    service_zip,
    sign_in,
    unique,
)

MARKUP = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
README = "# Greeter\n\nSays hello to whoever the event names.\n"


def test_upload_a_service_through_the_form(ui_server: UIServer, page: Page, tmp_path: Path) -> None:
    keys = ui_server.project()
    ui_server.deploy(
        keys, unique("existing"), {"main.py": "print(1)\n"}, description="Already here"
    )
    name = unique("greeter")
    archive = tmp_path / f"{name}.zip"
    archive.write_bytes(
        service_zip(
            name,
            {"greet.py": "print('hello')\n", "README.md": README, "requirements.txt": ""},
            trigger_events=["people.joined"],
            description="Greets people",
        )
    )
    sign_in(page, ui_server, keys.developer, "/services")
    page.get_by_label("Zip file").set_input_files(str(archive))
    page.get_by_label("Version label").fill("v1")
    page.get_by_role("button", name="Upload").click()

    expect(page).to_have_url(re.compile(rf"/services/{re.escape(keys.project)}\.{name}\?version="))
    expect(page.get_by_role("status")).to_contain_text("is deployed")
    expect(page.locator("h1")).to_have_text(name)
    expect(page.get_by_role("cell", name="v1", exact=True)).to_be_visible()
    expect(page.locator("pre.readme")).to_contain_text("Says hello to whoever")
    expect(page.get_by_role("cell", name="people.joined")).to_be_visible()
    screenshot(page, "service-detail")

    page.goto(f"{ui_server.url}/services")
    row = page.locator("#services tbody tr", has_text=name)
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("people.joined")
    expect(row).to_contain_text("latest v1")
    expect(page.locator("#services tbody tr")).to_have_count(2)  # only this project's
    screenshot(page, "services")


def test_an_invalid_upload_lists_its_problems(
    ui_server: UIServer, page: Page, tmp_path: Path
) -> None:
    keys = ui_server.project()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(service_zip("Not A Valid Name!", {"main.py": "x = 1\n"}))
    sign_in(page, ui_server, keys.developer, "/services")
    page.get_by_label("Zip file").set_input_files(str(bad))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("alert")).to_contain_text("the service package is invalid")
    expect(page.locator(".problems")).to_contain_text("name")


def test_activate_config_and_write_only_secrets(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    service = ui_server.deploy(keys, unique("settings"), {"main.py": "print(1)\n"})
    sign_in(page, ui_server, keys.developer, f"/services/{service}")

    page.get_by_role("button", name="Deactivate").click()
    expect(page.locator("#service-state")).to_have_text("inactive")
    assert not ui_server.platform.store.get_service(service).active  # type: ignore[union-attr]
    page.get_by_role("button", name="Activate").click()
    expect(page.locator("#service-state")).to_have_text("active")

    page.get_by_label("Config (JSON)").fill("[1, 2]")
    page.get_by_role("button", name="Save config").click()
    expect(page.locator("#config-error")).to_contain_text("must be a JSON object")
    page.get_by_label("Config (JSON)").fill('{"threshold": 0.8}')
    page.get_by_role("button", name="Save config").click()
    expect(page.get_by_role("status").first).to_contain_text("config override saved")

    secret_value = "s3cr3t-" + unique("v")
    page.get_by_label("Name").fill("API_TOKEN")
    page.get_by_label("Value").fill(secret_value)
    page.get_by_role("button", name="Set secret").click()
    expect(page.locator(".secrets")).to_contain_text("API_TOKEN")
    page.reload()
    assert secret_value not in page.content()  # written, never rendered back
    assert get_json(ui_server.platform.kv, secrets_key(service)) == {"API_TOKEN": secret_value}
    page.get_by_role("button", name="Remove secret API_TOKEN").click()
    expect(page.locator(".secrets")).to_have_count(0)
    assert get_json(ui_server.platform.kv, secrets_key(service)) == {}


def test_a_viewer_sees_no_change_actions_and_the_server_refuses_them(
    ui_server: UIServer, page: Page
) -> None:
    keys = ui_server.project()
    service = ui_server.deploy(keys, unique("viewed"), {"main.py": "print(1)\n"})
    sign_in(page, ui_server, keys.viewer, f"/services/{service}")
    expect(page.locator("h1")).to_be_visible()
    for action in ("Deactivate", "Save config", "Set secret"):
        expect(page.get_by_role("button", name=action)).to_have_count(0)
    page.goto(f"{ui_server.url}/services")
    expect(page.get_by_role("heading", name="Upload a service")).to_have_count(0)
    token = csrf_token(page)
    refused = page.request.post(
        f"{ui_server.url}/services/{service}/active", form={"active": "false", "csrf_token": token}
    )
    assert refused.status == 403
    assert ui_server.platform.store.get_service(service).active  # type: ignore[union-attr]
    secret = page.request.post(
        f"{ui_server.url}/services/{service}/secrets",
        form={"name": "X", "value": "y", "csrf_token": token},
    )
    assert secret.status == 403


def test_another_projects_service_is_not_found(ui_server: UIServer, page: Page) -> None:
    mine, theirs = ui_server.project(), ui_server.project()
    other = ui_server.deploy(theirs, unique("private"), {"main.py": "print(1)\n"})
    sign_in(page, ui_server, mine.admin)
    answer = page.goto(f"{ui_server.url}/services/{other}")
    assert answer is not None and answer.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    # the same answer as for a service that does not exist at all: nothing tells them apart
    shown = page.locator("p.error").inner_text()
    made_up = f"{theirs.project}.no-such-service"
    assert page.goto(f"{ui_server.url}/services/{made_up}").status == 404  # type: ignore[union-attr]
    assert page.locator("p.error").inner_text() == shown.replace(other, made_up)
    token = csrf_token(page)
    post = page.request.post(
        f"{ui_server.url}/services/{other}/active", form={"active": "false", "csrf_token": token}
    )
    assert post.status == 404
    page.goto(f"{ui_server.url}/services?project={theirs.project}")
    expect(page.locator("h1")).to_have_text("Not found")


def test_markup_in_a_service_is_shown_as_text(
    ui_server: UIServer, new_page: Callable[..., Page]
) -> None:
    keys = ui_server.project()
    service = ui_server.deploy(
        keys, unique("inert"), {"main.py": "print(1)\n", "README.md": MARKUP}, description=MARKUP
    )
    page = new_page(TABLET)
    sign_in(page, ui_server, keys.viewer, "/services")
    expect(page.locator("#services")).to_contain_text("<script>window.__pwned=1</script>")
    page.goto(f"{ui_server.url}/services/{service}")
    expect(page.locator("pre.readme")).to_contain_text('<img src=x onerror="window.__pwned=2">')
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img").count() == 0
    assert page.errors == []  # type: ignore[attr-defined]
    screenshot(page, "service-detail-tablet")
