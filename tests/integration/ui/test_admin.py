"""The admin view in a real browser: a platform-wide admin creates a project and a key whose
secret is shown once (and works, and is painted over in the docs' screenshot), then revokes it
(its session ends); a project admin finds Admin in the nav bar and manages its project's keys;
a developer or viewer has no Admin link and cannot reach admin (403, on POST too)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.integration.ui.conftest import UIServer, csrf_token, screenshot, sign_in


def test_a_key_is_shown_once_works_and_is_revoked(
    ui_server: UIServer, new_page: Callable[..., Page]
) -> None:
    page = new_page()
    project = f"adm-{uuid.uuid4().hex[:8]}"
    sign_in(page, ui_server, ui_server.admin, "/admin")
    page.get_by_label("Name", exact=True).fill(project)
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(f"{ui_server.url}/admin?project={project}")
    expect(page.get_by_role("heading", name=f"API keys of {project}")).to_be_visible()

    page.get_by_label("Key name").fill("ci deploy")
    page.get_by_label("Key role").select_option("developer")
    page.get_by_role("button", name="Create key").click()
    token = page.locator("#new-token").inner_text().strip()
    assert token.startswith("fxk_")
    store = ui_server.platform.store
    assert store is not None
    (key,) = store.list_api_keys(project)
    assert key.role == "developer" and not key.revoked and key.id in token
    # the docs' screenshot shows the page, but not the secret: it is painted over
    screenshot(page, "admin", secrets=[page.locator("#new-token")])

    page.goto(f"{ui_server.url}/admin?project={project}")  # shown once: not on the next page
    expect(page.locator(f'tr[data-key="{key.id}"]')).to_contain_text("ci deploy")
    expect(page.locator("#new-token")).to_have_count(0)
    assert token not in page.content()

    other = new_page()
    sign_in(other, ui_server, token, "/services")  # the key works
    expect(other.get_by_text(f"developer in {project}")).to_be_visible()

    page.get_by_role("button", name="Revoke ci deploy").click()
    expect(page.locator("#key-revoked")).to_contain_text(key.id)
    expect(page.locator(f'tr[data-key="{key.id}"]')).to_contain_text("revoked")
    assert store.list_api_keys(project)[0].revoked
    other.goto(f"{ui_server.url}/services")  # its session ended with it
    assert "/signin" in other.url


def test_a_project_admin_manages_its_keys(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    sign_in(page, ui_server, keys.admin, "/")
    page.get_by_role("link", name="Admin").click()  # the nav bar leads a project admin there
    page.wait_for_url(f"{ui_server.url}/admin")
    expect(page.get_by_role("heading", name=f"API keys of {keys.project}")).to_be_visible()
    expect(page.get_by_role("heading", name="New project")).to_have_count(0)
    expect(page.locator("tr[data-key]")).to_have_count(3)  # the fixture's viewer/developer/admin
    page.get_by_label("Key name").fill("dashboards")
    page.get_by_label("Key role").select_option("viewer")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-token")).to_contain_text("fxk_")
    expect(page.locator("tr[data-key]")).to_have_count(4)
    token = csrf_token(page)
    # another project's keys and a platform-wide key are out of reach
    other = ui_server.project()
    assert page.request.get(f"{ui_server.url}/admin?project={other.project}").status == 404
    answer = page.request.post(
        f"{ui_server.url}/admin/projects", form={"csrf_token": token, "name": "nope"}
    )
    assert answer.status == 403


def test_a_non_admin_cannot_reach_admin(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    store = ui_server.platform.store
    assert store is not None
    (admin_key,) = [k for k in store.list_api_keys(keys.project) if k.role == "admin"]
    for role_token in (keys.developer, keys.viewer):
        page.context.clear_cookies()
        sign_in(page, ui_server, role_token, "/")
        expect(page.get_by_role("link", name="Admin")).to_have_count(0)
        assert page.request.get(f"{ui_server.url}/admin").status == 403
        token = csrf_token(page)
        posts = {
            "/admin/keys": {"name": "sneaky", "role": "admin"},
            "/admin/keys/revoke": {"key_id": admin_key.id},
            "/admin/projects": {"name": f"x-{uuid.uuid4().hex[:6]}"},
        }
        for path, form in posts.items():
            answer = page.request.post(f"{ui_server.url}{path}", form={**form, "csrf_token": token})
            assert answer.status == 403, path
    assert len(store.list_api_keys(keys.project)) == 3
    assert not any(k.revoked for k in store.list_api_keys(keys.project))
