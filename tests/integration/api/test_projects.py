"""Projects, API keys and role boundaries."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.integration.api.conftest import ApiHarness


def test_health_needs_no_key_and_everything_else_does(api: ApiHarness) -> None:
    assert api.client.get("/api/v1/health").json()["status"] == "ok"
    answer = api.client.get("/api/v1/projects")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    bad = api.client.get("/api/v1/projects", headers={"Authorization": "Bearer fxk_nope_nope"})
    assert bad.status_code == 401
    assert api.client.get("/api/v1/projects", headers={"X-API-Key": "wrong"}).status_code == 401


def test_info_names_the_caller(api: ApiHarness) -> None:
    project = api.project()
    info = api.client.get("/api/v1/info", headers=project.developer).json()
    assert info["caller"]["project"] == project.name
    assert info["caller"]["role"] == "developer"
    assert "ray_dashboard" in info


def test_admin_creates_projects_and_keys_are_shown_once(api: ApiHarness) -> None:
    project = api.project()
    listed = api.client.get(f"/api/v1/projects/{project.name}/keys", headers=project.admin)
    assert listed.status_code == 200
    body = listed.json()
    assert body["total"] == 3
    assert all("token" not in key and "key_hash" not in key for key in body["items"])
    assert {key["role"] for key in body["items"]} == {"viewer", "developer", "admin"}


def test_project_names_and_duplicates(api: ApiHarness) -> None:
    bad = api.client.post("/api/v1/projects", json={"name": "Not Valid!"}, headers=api.admin)
    assert bad.status_code == 422
    assert bad.json()["error"]["problems"][0]["location"] == "body.name"
    project = api.project()
    again = api.client.post("/api/v1/projects", json={"name": project.name}, headers=api.admin)
    assert again.status_code == 409


def test_project_keys_cannot_manage_projects_or_see_others(api: ApiHarness) -> None:
    mine, other = api.project(), api.project()
    made = api.client.post("/api/v1/projects", json={"name": "x-1"}, headers=mine.admin)
    assert made.status_code == 403
    # another project answers as if it did not exist
    assert api.client.get(f"/api/v1/projects/{other.name}", headers=mine.admin).status_code == 404
    keys = api.client.get(f"/api/v1/projects/{other.name}/keys", headers=mine.admin)
    assert keys.status_code == 404
    names = [
        p["name"] for p in api.client.get("/api/v1/projects", headers=mine.viewer).json()["items"]
    ]
    assert names == [mine.name]
    everything = api.client.get("/api/v1/projects?limit=500", headers=api.admin).json()
    assert {mine.name, other.name} <= {p["name"] for p in everything["items"]}


def test_only_project_admins_manage_keys(api: ApiHarness) -> None:
    project = api.project()
    url = f"/api/v1/projects/{project.name}/keys"
    for headers in (project.viewer, project.developer):
        assert api.client.get(url, headers=headers).status_code == 403
        made = api.client.post(url, json={"name": "k", "role": "admin"}, headers=headers)
        assert made.status_code == 403
    made = api.client.post(url, json={"name": "ci", "role": "developer"}, headers=project.admin)
    assert made.status_code == 201
    token = made.json()["token"]
    key_id = made.json()["key"]["id"]
    fresh = {"Authorization": f"Bearer {token}"}
    assert api.client.get(f"/api/v1/projects/{project.name}", headers=fresh).status_code == 200
    gone = api.client.delete(f"{url}/{key_id}", headers=project.admin)
    assert gone.status_code == 204
    assert api.client.get(f"/api/v1/projects/{project.name}", headers=fresh).status_code == 401


def test_role_must_be_known(api: ApiHarness) -> None:
    project = api.project()
    answer = api.client.post(
        f"/api/v1/projects/{project.name}/keys",
        json={"name": "k", "role": "superuser"},
        headers=project.admin,
    )
    assert answer.status_code == 422


def test_platform_keys(api: ApiHarness) -> None:
    made = api.client.post("/api/v1/keys", json={"name": "ops", "role": "admin"}, headers=api.admin)
    assert made.status_code == 201
    ops = {"Authorization": f"Bearer {made.json()['token']}"}
    assert api.client.get("/api/v1/keys", headers=ops).status_code == 200
    viewer = api.client.post("/api/v1/keys", json={"name": "v", "role": "viewer"}, headers=ops)
    assert viewer.status_code == 422
    mine = api.client.get("/api/v1/info", headers=ops).json()["caller"]["key_id"]
    assert api.client.delete(f"/api/v1/keys/{mine}", headers=ops).status_code == 409
    project = api.project()
    assert api.client.get("/api/v1/keys", headers=project.admin).status_code == 403


def test_empty_project_can_be_deleted(api: ApiHarness) -> None:
    project = api.project()
    assert (
        api.client.delete(f"/api/v1/projects/{project.name}", headers=project.admin).status_code
        == 403
    )
    assert (
        api.client.delete(f"/api/v1/projects/{project.name}", headers=api.admin).status_code == 204
    )
    assert api.client.get(f"/api/v1/projects/{project.name}", headers=api.admin).status_code == 404
    # its keys went with it
    assert api.client.get("/api/v1/info", headers=project.admin).status_code == 401
