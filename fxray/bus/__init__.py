"""The event bus interface: partitioned, ordered logs with consumer groups and committed offsets.

Two implementations share it: the embedded bus (a Ray actor, no broker to install) and Kafka.
Offsets follow Kafka's convention: a committed offset is the offset of the *next* record to read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class Record:
    """One record on a topic partition."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp_ms: int = 0


@dataclass(slots=True)
class OutgoingRecord:
    """A record to produce; the partition is chosen from the key (or round-robin if none)."""

    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@runtime_checkable
class Consumer(Protocol):
    """A member of a consumer group. Not thread-safe; one owner at a time."""

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Return up to ``max_records`` records from the assigned, unpaused partitions."""
        ...

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Durably record the next offset to read per partition for this group."""
        ...

    def assignment(self) -> list[TopicPartition]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def close(self) -> None:
        """Leave the group; its partitions go to the other members."""
        ...

    async def poll_async(self, max_records: int, timeout_s: float) -> list[Record]: ...

    async def commit_async(self, offsets: dict[TopicPartition, int]) -> None: ...

    async def close_async(self) -> None: ...


@runtime_checkable
class EventBus(Protocol):
    """Produce records and open consumers. Implementations must be picklable handles."""

    def ensure_topic(self, topic: str, partitions: int) -> None: ...

    def produce(self, topic: str, records: list[OutgoingRecord]) -> None:
        """Append records; returns once they are durably on the bus."""
        ...

    async def produce_async(self, topic: str, records: list[OutgoingRecord]) -> None: ...

    def consumer(self, group: str, topics: list[str], member_id: str | None = None) -> Consumer:
        """A group member; a ``member_id`` is a stable identity a restart takes over."""
        ...

    def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[Record]:
        """Records of one partition from ``offset`` on, outside any consumer group."""
        ...

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset to be written, per partition."""
        ...

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offsets, per partition (0 where nothing is committed)."""
        ...
