"""The router's intake on its own: batches handed on, backpressure, commits behind open runs.

A fake consumer stands in for the bus (the real buses are tested under tests/integration)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from fxray.bus import Record, TopicPartition
from fxray.router.intake import Intake
from fxray.settings import Settings

TP: TopicPartition = ("fxray.events", 0)


class FakeConsumer:
    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.pauses = 0
        self.resumes = 0

    def assignment(self) -> list[TopicPartition]:
        return [TP]

    async def poll_async(self, max_records: int, timeout_s: float) -> list[Record]:
        if TP in self.paused or not self.records:
            await asyncio.sleep(timeout_s)
            return []
        taken, self.records = self.records[:max_records], self.records[max_records:]
        return taken

    async def commit_async(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.pauses += 1
        self.paused.update(partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumes += 1
        self.paused.difference_update(partitions)

    async def close_async(self) -> None:
        pass


def _records(count: int) -> list[Record]:
    return [Record(TP[0], TP[1], offset, None, b"{}") for offset in range(count)]


def _intake(consumer: FakeConsumer, open_runs: list[Record], **settings: Any) -> Intake:
    """An intake whose every record causes one run, kept open in ``open_runs``."""

    async def route(records: list[Record]) -> None:
        for record in records:
            intake.track(record, 1)
        open_runs.extend(records)

    intake = Intake(
        Settings(**settings),
        bus=None,  # type: ignore[arg-type]  # open() is not called: the consumer is set below
        router_id="router-test",
        in_flight=lambda: len(open_runs),
        route=route,
        counters=Counter(),
        note_error=lambda text: None,
    )
    intake.consumer = consumer
    return intake


async def _until(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_full_intake_pauses_then_resumes_and_commits_behind_open_runs() -> None:
    asyncio.run(_pauses_resumes_and_commits())


async def _pauses_resumes_and_commits() -> None:
    consumer = FakeConsumer(_records(6))
    open_runs: list[Record] = []
    intake = _intake(consumer, open_runs, router_max_in_flight=4, router_pause_after_s=0.05)
    loop = asyncio.create_task(intake.consume_loop())
    try:
        await _until(lambda: intake.paused)
        assert len(open_runs) == 4 and consumer.pauses == 1
        await intake.commit()
        assert consumer.commits == [{TP: 0}]  # offset 0 is still open: read again from it

        ended, open_runs[:] = open_runs[:2], open_runs[2:]  # runs of offsets 0 and 1 end
        intake.runs_ended((TP, r.offset) for r in ended)
        await _until(lambda: not consumer.records)  # resumed: offsets 4 and 5 came
        assert consumer.resumes == 1 and len(open_runs) == 4
        await intake.commit()
        assert consumer.commits[-1] == {TP: 2}  # up to the lowest offset still open

        intake.runs_ended((TP, r.offset) for r in open_runs)
        open_runs.clear()
        await intake.commit()
        assert consumer.commits[-1] == {TP: 6}
    finally:
        intake.running = False  # as the router's stop() does
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


def test_a_router_full_for_a_moment_waits_instead_of_pausing() -> None:
    asyncio.run(_waits_instead_of_pausing())


async def _waits_instead_of_pausing() -> None:
    consumer = FakeConsumer(_records(8))
    open_runs: list[Record] = []
    intake = _intake(consumer, open_runs, router_max_in_flight=4, router_pause_after_s=5.0)
    loop = asyncio.create_task(intake.consume_loop())
    try:
        await _until(lambda: len(open_runs) == 4)
        await asyncio.sleep(0.1)
        intake.runs_ended((TP, r.offset) for r in open_runs)
        open_runs.clear()
        await _until(lambda: len(open_runs) == 4 and not consumer.records)
        assert consumer.pauses == 0 and not intake.paused
    finally:
        intake.running = False  # as the router's stop() does
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
