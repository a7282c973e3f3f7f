"""The assets view in a real browser: upload a file, see it listed, download the same bytes,
delete it; a viewer lists and downloads but cannot upload (403); another project's assets are
not found (404)."""

from __future__ import annotations

import hashlib
import io
import uuid

from playwright.sync_api import Page, expect

from tests.integration.ui.conftest import UIServer, csrf_token, screenshot, sign_in

ORDERS = b"id,amount\n1,12.50\n2,7.25\n" + uuid.uuid4().hex.encode()


def test_upload_download_and_delete(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    sign_in(page, ui_server, keys.developer, "/assets")
    expect(page.get_by_text("No assets")).to_be_visible()
    page.get_by_label("File").set_input_files(
        {"name": "orders.csv", "mimeType": "text/csv", "buffer": ORDERS}
    )
    page.get_by_label("Store as path").fill("in/orders.csv")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#asset-done")).to_contain_text("in/orders.csv")
    row = page.locator('tr[data-asset="in/orders.csv"]')
    expect(row).to_contain_text("text/csv")
    expect(row).to_contain_text(hashlib.sha256(ORDERS).hexdigest()[:12])
    screenshot(page, "assets")

    with page.expect_download() as download:
        row.get_by_role("link", name="in/orders.csv").click()
    assert download.value.suggested_filename == "orders.csv"
    assert download.value.path().read_bytes() == ORDERS
    stored = ui_server.platform.assets.list(keys.project, "")
    assert [a.path for a in stored] == ["in/orders.csv"]

    row.get_by_role("button", name="Delete in/orders.csv").click()
    expect(page.locator("#asset-done")).to_contain_text("Deleted")
    expect(page.locator("tr[data-asset]")).to_have_count(0)
    assert ui_server.platform.assets.list(keys.project, "") == []


def test_a_viewer_downloads_but_cannot_upload(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    ui_server.platform.upload_asset(keys.project, "report.txt", io.BytesIO(b"quarterly"), None)
    sign_in(page, ui_server, keys.viewer, "/assets")
    expect(page.locator('tr[data-asset="report.txt"]')).to_be_visible()
    expect(page.get_by_role("button", name="Upload")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete report.txt")).to_have_count(0)
    got = page.request.get(f"{ui_server.url}/assets/file/{keys.project}/report.txt")
    assert got.status == 200 and got.body() == b"quarterly"
    assert got.headers["content-disposition"].startswith("attachment")
    token = csrf_token(page)
    refused = page.request.post(
        f"{ui_server.url}/assets/upload",
        multipart={
            "csrf_token": token,
            "project": keys.project,
            "path": "evil.txt",
            "file": {"name": "evil.txt", "mimeType": "text/plain", "buffer": b"x"},
        },
    )
    assert refused.status == 403
    gone = page.request.post(
        f"{ui_server.url}/assets/delete",
        form={"csrf_token": token, "project": keys.project, "path": "report.txt"},
    )
    assert gone.status == 403
    assert [a.path for a in ui_server.platform.assets.list(keys.project, "")] == ["report.txt"]


def test_another_projects_assets_are_not_found(ui_server: UIServer, page: Page) -> None:
    mine, theirs = ui_server.project(), ui_server.project()
    ui_server.platform.upload_asset(theirs.project, "secret.txt", io.BytesIO(b"theirs"), None)
    sign_in(page, ui_server, mine.admin, "/assets")
    assert (
        page.request.get(f"{ui_server.url}/assets/file/{theirs.project}/secret.txt").status == 404
    )
    assert page.request.get(f"{ui_server.url}/assets?project={theirs.project}").status == 404
    posted = page.request.post(
        f"{ui_server.url}/assets/delete",
        form={"csrf_token": csrf_token(page), "project": theirs.project, "path": "secret.txt"},
    )
    assert posted.status == 404
