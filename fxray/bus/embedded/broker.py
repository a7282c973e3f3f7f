"""The embedded broker, a Ray actor: :class:`EmbeddedBroker` owns an
:class:`~fxray.bus.embedded.log.EmbeddedLog` and adds long-polling fetches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import ray

from fxray.bus import OutgoingRecord, TopicPartition
from fxray.bus.embedded.log import EmbeddedLog, OutRow, Row


class EmbeddedBroker:
    """The Ray actor holding an :class:`EmbeddedLog`; fetches are long polls.

    An async actor: every method runs on the actor's event loop, so the log needs no locks.
    Use :meth:`EmbeddedBus.start` rather than creating it directly.
    """

    def __init__(self, default_partitions: int = 4, session_timeout_s: float = 10.0) -> None:
        self._log = EmbeddedLog(default_partitions, session_timeout_s)
        # Set (and replaced) on every change that may make a waiting fetch succeed.
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def ping(self) -> bool:
        return True

    async def ensure_topic(self, topic: str, partitions: int) -> None:
        self._log.ensure_topic(topic, partitions)
        self._notify()

    async def produce(self, topic: str, records: list[OutgoingRecord]) -> list[tuple[int, int]]:
        """Append records; returns ``(partition, offset)`` per record."""
        out = self._log.produce(topic, records)
        if out:
            self._notify()
        return out

    async def produce_rows(self, topic: str, rows: list[OutRow]) -> list[tuple[int, int]]:
        """Like :meth:`produce`, with :data:`OutRow` tuples (cheaper to ship)."""
        out = self._log.produce_rows(topic, rows)
        if out:
            self._notify()
        return out

    async def join(self, group: str, member_id: str, topics: list[str]) -> list[TopicPartition]:
        self._log.join(group, member_id, topics)
        self._notify()
        return self._log.assignment(group, member_id)

    async def leave(self, group: str, member_id: str) -> None:
        self._log.leave(group, member_id)
        self._notify()

    async def fetch(
        self,
        group: str,
        member_id: str,
        max_records: int,
        timeout_s: float,
        paused: Iterable[TopicPartition] = (),
        topics: list[str] | None = None,
    ) -> tuple[list[Row], list[TopicPartition]]:
        """Long-poll fetch: wait up to ``timeout_s`` for records if none are ready.

        Returns :data:`Row` tuples (cheaper to ship than Records) and the member's assignment.

        With ``topics`` given, a member that is unknown (e.g. expired) joins again first, like a
        Kafka consumer rejoining after a session timeout; otherwise that raises
        :class:`UnknownMemberError`.
        """
        paused_set = frozenset((t, p) for t, p in paused)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        # Wake at least this often to refresh the session and notice expiries of others.
        slice_s = max(0.05, self._log.session_timeout_s / 3)
        while True:
            if self._log.expire_members():
                self._notify()  # survivors waiting in a fetch pick up the freed partitions
            changed = self._changed
            if topics is not None and not self._log.is_member(group, member_id):
                self._log.join(group, member_id, topics)
                self._notify()
                changed = self._changed
            records, assignment = self._log.fetch_rows(group, member_id, max_records, paused_set)
            remaining = deadline - loop.time()
            if records or remaining <= 0 or max_records <= 0:
                return records, assignment
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, slice_s))

    async def commit(
        self, group: str, member_id: str, offsets: dict[TopicPartition, int]
    ) -> set[TopicPartition]:
        return self._log.commit(group, member_id, offsets)

    async def assignment(self, group: str, member_id: str) -> list[TopicPartition]:
        return self._log.assignment(group, member_id)

    async def members(self, group: str) -> list[str]:
        return self._log.members(group)

    async def generation(self, group: str) -> int:
        return self._log.generation(group)

    async def topics(self) -> dict[str, int]:
        return self._log.topics()

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return self._log.end_offsets(topic)

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        return self._log.committed(group, topic)

    async def lag(self, group: str, topic: str) -> int:
        return self._log.lag(group, topic)

    async def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[Row]:
        return self._log.read_rows(topic, partition, offset, max_records)


_BrokerActor = ray.remote(EmbeddedBroker)
