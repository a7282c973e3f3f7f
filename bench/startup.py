"""Cold and warm start of a service version with one small dependency: fxray vs Ray's ``pip``.

Each figure is the time from asking for a run (or an actor) to its first result, so it covers
installing the dependency, starting the worker process and running a trivial script.

fxray:
  * cold       -- empty environment cache: pip installs the requirement, then the executor starts
  * warm       -- a *new* version with the same requirements: cached environment, new executor
  * hot        -- a second run on the version's warm executor
  * restart    -- a new Ray cluster and platform on the same home: the cache survives
Ray's plain runtime_env ``{"pip": [...]}``:
  * cold       -- first actor with that env in a Ray session (clones the base virtualenv)
  * warm       -- a second actor with the same env in the same session
  * restart    -- first actor after a Ray restart (Ray's cache is per session)

Run: ``.venv/bin/python bench/startup.py`` (writes ``bench/results/startup.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import ray

from fxray.platform import apply_ray_env_defaults

REQUIREMENT = "tabulate==0.9.0"
SCRIPT = "import tabulate\nfrom fxray import context\ncontext.result = tabulate.__version__\n"
RESULTS = Path(__file__).parent / "results"

apply_ray_env_defaults()


def _service(root: Path, tag: str) -> Path:
    folder = root / f"dep-{tag}"
    folder.mkdir(parents=True)
    manifest = {"name": "dep", "entrypoint": "main.py"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(SCRIPT + f"# {tag}\n")
    (folder / "requirements.txt").write_text(REQUIREMENT + "\n")
    return folder


def _timed_run(platform: object, version: str) -> float:
    started = time.perf_counter()
    event = platform.run("dep", version=version)  # type: ignore[attr-defined]
    (run,) = platform.wait_for_runs(event_id=event["id"], timeout=600)  # type: ignore[attr-defined]
    if run.status != "succeeded":
        raise RuntimeError(f"run failed: {run.error}")
    return time.perf_counter() - started


def bench_fxray(work: Path) -> dict[str, float]:
    from fxray import Platform, Settings

    home = work / "home"
    figures: dict[str, float] = {}
    for phase in ("first", "restart"):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        settings = Settings(home=home, instance=f"b{uuid.uuid4().hex[:6]}")
        with Platform(settings) as platform:
            if phase == "first":
                platform.deploy(_service(work, "a"), label="a")
                figures["cold_s"] = _timed_run(platform, "a")
                figures["hot_s"] = _timed_run(platform, "a")
                platform.deploy(_service(work, "b"), label="b")
                figures["warm_s"] = _timed_run(platform, "b")
            else:
                figures["restart_s"] = _timed_run(platform, "b")
        ray.shutdown()
    env_dirs = [p for p in (home / "envs").iterdir() if p.is_dir()]
    figures["env_mb"] = (
        sum(f.stat().st_size for d in env_dirs for f in d.rglob("*") if f.is_file()) / 1e6
    )
    return figures


@ray.remote(num_cpus=0)
class _Probe:
    def version(self) -> str:
        import tabulate

        return tabulate.__version__


def _ray_actor_start() -> float:
    started = time.perf_counter()
    probe = _Probe.options(runtime_env={"pip": [REQUIREMENT]}).remote()
    ray.get(probe.version.remote(), timeout=600)
    elapsed = time.perf_counter() - started
    ray.kill(probe)
    return elapsed


def bench_ray_pip() -> dict[str, float]:
    figures: dict[str, float] = {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    figures["cold_s"] = _ray_actor_start()
    figures["warm_s"] = _ray_actor_start()
    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    figures["restart_s"] = _ray_actor_start()
    ray.shutdown()
    return figures


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="fxb"))
    os.environ["RAY_TMPDIR"] = str(work / "ray")
    try:
        print(f"dependency: {REQUIREMENT}  (each figure: ask -> first result)", flush=True)
        fxray_figures = bench_fxray(work)
        print("fxray done", flush=True)
        ray_figures = bench_ray_pip()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "requirement": REQUIREMENT,
        "python": sys.version.split()[0],
        "ray": ray.__version__,
        "fxray": fxray_figures,
        "ray_pip_runtime_env": ray_figures,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        ("cold (first ever)", fxray_figures["cold_s"], ray_figures["cold_s"]),
        ("warm (new version/actor, same deps)", fxray_figures["warm_s"], ray_figures["warm_s"]),
        ("after a Ray restart", fxray_figures["restart_s"], ray_figures["restart_s"]),
        ("hot (warm executor)", fxray_figures["hot_s"], float("nan")),
    ]
    print(f"{'start of a version':40} {'fxray s':>9} {'ray pip s':>10}")
    for label, ours, theirs in rows:
        print(f"{label:40} {ours:9.2f} {theirs:10.2f}")
    print(f"fxray environment on disk: {fxray_figures['env_mb']:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
