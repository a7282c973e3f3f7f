"""Runs per second through the embedded path: embedded bus -> router -> executors -> SQLite.

A trivial one-script service is linked to an event type; N events are published at once and
the clock stops when every run is recorded as finished and every offset is committed.

Run: ``.venv/bin/python bench/embedded.py [--events N]`` (writes ``bench/results/embedded.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import ray

from fxray import Platform, Settings
from fxray.events import cloudevent as ev
from fxray.platform import apply_ray_env_defaults

RESULTS = Path(__file__).parent / "results"

apply_ray_env_defaults()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000, help="events per publish call")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fxe"))
    os.environ["RAY_TMPDIR"] = str(work / "ray")
    service = work / "trivial"
    service.mkdir()
    (service / "manifest.json").write_text(
        json.dumps({"name": "trivial", "entrypoint": "main.py", "trigger_events": ["bench.ping"]})
    )
    (service / "main.py").write_text("from fxray import context\nx = context.params.get('i')\n")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        settings = Settings(home=work / "home", instance=f"b{uuid.uuid4().hex[:6]}")
        with Platform(settings) as platform:
            platform.deploy(service)
            warm = platform.send("bench.ping", {"i": -1})
            platform.wait_for_runs(event_id=warm["id"], timeout=120)
            events = [ev.new_event("bench.ping", {"i": i}) for i in range(args.events)]
            started = time.perf_counter()
            for i in range(0, len(events), args.batch):
                platform.publish(events[i : i + args.batch])
            stats = platform.wait_idle(timeout=600)
            elapsed = time.perf_counter() - started
            done = platform.store.count_runs(status="succeeded") - 1  # type: ignore[union-attr]
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "events": args.events,
        "runs_succeeded": done,
        "seconds": round(elapsed, 3),
        "runs_per_s": round(done / elapsed, 1),
        "batches": stats["counters"].get("batches"),
        "executors": len(stats["executors"]),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embedded.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if done == args.events else 1


if __name__ == "__main__":
    raise SystemExit(main())
