"""Syncing services from git on the services page, in a real browser: a developer syncs a
local repository (file://, allowed as the API's own git tests allow it), sees what each folder
became, syncs it again after a commit; refused URLs and hosts are shown in the form (no stack
trace); a viewer gets no form, and the server refuses its post and a post without the CSRF
token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.git_repo import git
from tests.integration.ui.conftest import UIServer, csrf_token, screenshot, sign_in, unique


def _repo(root: Path, service: str) -> Path:
    """A repository with one service folder and one folder whose manifest is invalid."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / service).mkdir()
    (root / service / "manifest.json").write_text(
        json.dumps({"name": service, "entrypoint": "m.py"})
    )
    (root / service / "m.py").write_text("print('hi')\n")
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text(json.dumps({"name": "Bad!", "priority": 0}))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_sync_services_from_git_through_the_form(
    ui_server: UIServer, page: Page, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ui_server.project()
    service = unique("gitsvc")
    repo = _repo(tmp_path / "repo", service)
    url = f"file://{repo}"
    store = ui_server.platform.store
    assert store is not None
    sign_in(page, ui_server, keys.developer, "/services")
    form = page.locator("#git-form")

    # local repositories are refused unless the server allows them: said in the form
    page.get_by_label("Repository URL").fill(url)
    page.get_by_role("button", name="Sync", exact=True).click()
    expect(page.locator("#git-problems")).to_contain_text("api_allow_local_repos")
    expect(page.get_by_label("Repository URL")).to_have_value(url)  # the form keeps its input
    assert "Traceback" not in page.content()
    assert store.list_repositories(keys.project) == []

    # a private address is refused by the same host check as the API's
    page.get_by_label("Repository URL").fill("https://127.0.0.1/acme/services.git")
    page.get_by_role("button", name="Sync", exact=True).click()
    expect(page.locator("#git-problems")).to_contain_text("git_allowed_hosts")

    monkeypatch.setattr(ui_server.platform.settings, "api_allow_local_repos", True)
    page.get_by_label("Repository URL").fill(url)
    page.get_by_label("Branch, tag or commit").fill("main")
    form.get_by_role("button", name="Sync", exact=True).click()
    result = page.locator("#git-result")
    expect(result).to_contain_text(git(repo, "rev-parse", "HEAD")[:12])
    expect(result.locator(f'li[data-folder="{service}"]')).to_contain_text("new version")
    expect(result.locator('li[data-folder="broken"]')).to_contain_text("not deployed")
    service_id = f"{keys.project}.{service}"
    (version,) = store.list_versions(service_id)
    assert version.label == f"git-{git(repo, 'rev-parse', 'HEAD')[:12]}"
    expect(page.locator("#services tbody tr", has_text=service)).to_be_visible()
    screenshot(page, "services-git-sync")

    # a commit, then "Sync again" on the registered repository makes a new version
    (repo / service / "m.py").write_text("print('hi again')\n")
    git(repo, "commit", "-q", "-am", "change")
    (registered,) = store.list_repositories(keys.project)
    row = page.locator(f'#repositories tr[data-repository="{registered.id}"]')
    row.get_by_role("button", name=f"Sync {url} again").click()
    expect(page.locator(f'#git-result li[data-folder="{service}"]')).to_contain_text("new version")
    assert len(store.list_versions(service_id)) == 2
    result.locator(f'li[data-folder="{service}"] a').click()
    expect(page.locator("h1")).to_have_text(service)

    # no CSRF token: refused
    answer = page.request.post(f"{ui_server.url}/services/git", form={"url": url})
    assert answer.status == 403

    # a viewer has no form, and its post is refused
    viewer = page.context.browser.new_context().new_page()  # type: ignore[union-attr]
    sign_in(viewer, ui_server, keys.viewer, "/services")
    expect(viewer.locator("#git-form")).to_have_count(0)
    answer = viewer.request.post(
        f"{ui_server.url}/services/git", form={"url": url, "csrf_token": csrf_token(viewer)}
    )
    assert answer.status == 403
    answer = viewer.request.post(
        f"{ui_server.url}/services/git/{registered.id}/sync",
        form={"csrf_token": csrf_token(viewer)},
    )
    assert answer.status == 403
    viewer.context.close()
    assert len(store.list_versions(service_id)) == 2
