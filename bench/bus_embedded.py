"""Throughput of the embedded bus through its Ray actor: produce and consume, batches of 500.

Run: ``.venv/bin/python bench/bus_embedded.py [--records N] [--value-size BYTES]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray

from fxray.bus import OutgoingRecord
from fxray.bus.embedded import EmbeddedBus
from fxray.platform import apply_ray_env_defaults

BATCH = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    apply_ray_env_defaults()
    own_tmp = None
    if "RAY_TMPDIR" not in os.environ:
        own_tmp = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="fxr", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        log_to_driver=False,
    )
    try:
        bus = EmbeddedBus.start(name="fxray-bench-bus", default_partitions=args.partitions)
        topic = "bench"
        bus.ensure_topic(topic, args.partitions)
        n = args.records // BATCH * BATCH
        value = b"x" * args.value_size
        batches = [
            [
                OutgoingRecord(value, key=b"k%d" % (i % 1000), headers=[("ce_type", b"bench")])
                for i in range(b * BATCH, (b + 1) * BATCH)
            ]
            for b in range(n // BATCH)
        ]

        t0 = time.perf_counter()
        for batch in batches:
            bus.produce(topic, batch)
        dt = time.perf_counter() - t0
        print(
            f"produce: {n} records, {args.value_size} B values, batches of {BATCH}: "
            f"{n / dt:,.0f} records/s ({dt / len(batches) * 1000:.2f} ms/batch)"
        )

        consumer = bus.consumer("bench", [topic])
        got = 0
        t0 = time.perf_counter()
        while got < n:
            records = consumer.poll(BATCH, 1.0)
            if not records:
                break
            offsets: dict[tuple[str, int], int] = {}
            for r in records:
                offsets[(r.topic, r.partition)] = r.offset + 1
            consumer.commit(offsets)
            got += len(records)
        dt = time.perf_counter() - t0
        print(
            f"consume: {got} records, poll({BATCH}) + commit per batch: "
            f"{got / dt:,.0f} records/s ({dt / max(1, got // BATCH) * 1000:.2f} ms/batch)"
        )
        consumer.close()
        assert got == n, f"consumed {got} of {n}"
        bus.shutdown()
    finally:
        ray.shutdown()
        if own_tmp:
            shutil.rmtree(own_tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
