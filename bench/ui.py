"""Server-side time of the web UI's pages with real volumes in PostgreSQL.

Seeds a schema of its own with ``--runs`` runs (default 100,000) over ``--services`` services
in five projects and ``--event-types`` event types (default 1,000), spread over the last two
hours, then requests every page and partial of the UI ``--requests`` times in-process (the ASGI
app through Starlette's test client: the server's work plus the client's small overhead, no
network) signed in as a platform-wide admin and as a project key, and prints p50 / p95 / max.
The target is p95 < 150 ms for every page.

Run: ``.venv/bin/python bench/ui.py [--database-url postgresql+psycopg2://...]`` (default: the
test PostgreSQL of ``.infra/env``, ``FXRAY_TEST_POSTGRES_URL``); writes bench/results/ui.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import statistics
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import ray
import sqlalchemy
from fastapi.testclient import TestClient

from fxray import Platform, Settings
from fxray.api import create_app
from fxray.platform import apply_ray_env_defaults

RESULTS = Path(__file__).parent / "results"
TARGET_P95_MS = 150.0
PROJECTS = 5

apply_ray_env_defaults()


def _package(name: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"name": name, "entrypoint": "main.py"}))
        zf.writestr("main.py", "print('hi')\n")
        zf.writestr("README.md", f"# {name}\n\nA benchmark service.\n")
    return out.getvalue()


def _seed(platform: Platform, runs: int, services: int, event_types: int) -> dict[str, Any]:
    store = platform.store
    assert store is not None
    rng = random.Random(11)
    ids: list[tuple[str, str]] = []  # (service id, version id)
    for p in range(PROJECTS):
        store.create_project(f"proj{p}")
    for i in range(services):
        done = platform.deploy(_package(f"svc{i:03d}"), project=f"proj{i % PROJECTS}")
        ids.append((done.service.id, done.version.id))
    types = [f"bench.type{i:04d}.happened" for i in range(event_types)]
    now = time.time()
    statuses = ["succeeded"] * 90 + ["failed"] * 5 + ["timed_out"] + ["pending"] * 2 + ["running"]
    chunk: list[dict[str, Any]] = []
    sample: dict[str, Any] = {}
    for n in range(runs):
        service_id, version_id = ids[n % len(ids)]
        created = now - rng.uniform(0, 7200)
        status = rng.choice(statuses)
        finished = status not in ("pending", "running")
        row = {
            "id": str(uuid.uuid4()),
            "service": service_id,
            "version_id": version_id,
            "trigger_id": None,
            "event_id": str(uuid.uuid4()),
            "event_type": types[n % len(types)],
            "correlation_id": str(uuid.uuid4()),
            "status": status,
            "priority": 5,
            "attempt": 1,
            "shadow": False,
            "created_at": created,
            "started_at": created + 0.01 if status != "pending" else None,
            "finished_at": created + 0.05 if finished else None,
            "steps": [
                {
                    "name": "main.py",
                    "status": status,
                    "started_at": created + 0.01,
                    "finished_at": created + 0.05,
                }
            ]
            if finished
            else [],
            "error": "ValueError: bench" if status in ("failed", "timed_out") else None,
            "logs": [[created + 0.02, "INFO", "main.py", f"line {i}"] for i in range(5)],
            "result": None,
        }
        chunk.append(row)
        if n == runs // 2:
            sample = {"run": row["id"], "service": service_id, "event_type": row["event_type"]}
        if len(chunk) == 5000:
            store.insert_runs(chunk)
            chunk = []
    if chunk:
        store.insert_runs(chunk)
    return sample


def _sign_in(client: TestClient, token: str) -> None:
    form = client.get("/signin")
    found = re.search(r'name="signin_token" value="([^"]+)"', form.text)
    assert found, "no sign-in form"
    answer = client.post("/signin", data={"api_key": token, "signin_token": found.group(1)})
    assert answer.status_code == 200, answer.status_code


def _measure(client: TestClient, path: str, requests: int) -> dict[str, float]:
    client.get(path)  # warm: caches, the package, the connection pool
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, f"{path}: {answer.status_code}"
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
        "max_ms": round(times[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("FXRAY_TEST_POSTGRES_URL"))
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--event-types", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    if not args.database_url or not args.database_url.startswith("postgresql"):
        parser.error("give a PostgreSQL URL (--database-url or FXRAY_TEST_POSTGRES_URL)")

    work = Path(tempfile.mkdtemp(prefix="fxu"))
    schema = f"uibench{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(args.database_url)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    url = args.database_url + ("&" if "?" in args.database_url else "?")
    url += f"options=-csearch_path%3D{schema}"
    os.environ["RAY_TMPDIR"] = str(work / "ray")
    results: dict[str, Any] = {}
    try:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        settings = Settings(
            home=work / "home", instance=f"u{uuid.uuid4().hex[:6]}", database_url=url
        )
        with Platform(settings) as platform:
            seeded = time.perf_counter()
            sample = _seed(platform, args.runs, args.services, args.event_types)
            print(f"seeded {args.runs} runs in {time.perf_counter() - seeded:.0f} s")
            store = platform.store
            assert store is not None
            _, platform_key = store.create_api_key("bench admin", "admin", None)
            _, project_key = store.create_api_key("bench dev", "developer", "proj0")
            app = create_app(platform)
            for who, token in (
                ("platform admin", platform_key),
                ("project developer", project_key),
            ):
                client = TestClient(app, base_url="http://bench.test")
                _sign_in(client, token)
                first = client.get("/runs")
                cursor = re.search(r"before=([^\"&]+)", first.text)
                service = sample["service"] if who == "platform admin" else "proj0.svc000"
                pages = [
                    "/",
                    "/services",
                    f"/services/{service}",
                    "/runs",
                    "/runs?status=failed",
                    f"/runs?service={service}",
                    f"/runs?event_type={sample['event_type']}",
                    f"/runs?before={cursor.group(1)}" if cursor else "/runs",
                    "/deadletters",
                ]
                if who == "platform admin":
                    pages.append(f"/runs/{sample['run']}")
                    pages.append(f"/runs/{sample['run']}/logs")
                results[who] = {}
                for path in pages:
                    results[who][path] = figure = _measure(client, path, args.requests)
                    print(
                        f"{who:18} {path[:60]:60} p50 {figure['p50_ms']:6.1f} ms"
                        f"  p95 {figure['p95_ms']:6.1f} ms  max {figure['max_ms']:6.1f} ms"
                    )
                client.close()
        ray.shutdown()
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
        shutil.rmtree(work, ignore_errors=True)
    worst = max(f["p95_ms"] for pages in results.values() for f in pages.values())
    RESULTS.mkdir(exist_ok=True)
    out = {"runs": args.runs, "services": args.services, "event_types": args.event_types,
           "requests": args.requests, "worst_p95_ms": worst, "pages": results}  # fmt: skip
    (RESULTS / "ui.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"worst p95 {worst:.1f} ms (target < {TARGET_P95_MS:.0f} ms)")
    return 0 if worst < TARGET_P95_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
