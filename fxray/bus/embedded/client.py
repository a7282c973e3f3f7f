"""The embedded bus's client handles on the broker actor: :class:`EmbeddedBus` (picklable,
implements :class:`~fxray.bus.EventBus`) and :class:`EmbeddedConsumer` (a group member,
implements :class:`~fxray.bus.Consumer`)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import ray

from fxray.bus import OutgoingRecord, Record, TopicPartition
from fxray.bus.embedded.broker import _BrokerActor
from fxray.bus.embedded.log import to_out_rows, to_records

log = logging.getLogger("fxray.bus.embedded")

DEFAULT_BUS_NAME = "fxray-bus"


class EmbeddedConsumer:
    """A consumer-group member of the embedded bus (implements :class:`fxray.bus.Consumer`).

    Lives in the caller's process; not thread-safe. The join request is sent on construction;
    its answer is awaited by the first call that needs it. Use :meth:`poll`/:meth:`commit` from
    sync code (including sync Ray actor methods) and :meth:`poll_async`/:meth:`commit_async`
    from async code (e.g. an async Ray actor) to keep the event loop free.
    """

    def __init__(
        self, broker: Any, group: str, topics: list[str], member_id: str | None = None
    ) -> None:
        self._broker = broker
        self.group = group
        self.topics = list(topics)
        self.member_id = member_id or f"{group}-{uuid.uuid4().hex}"
        self._paused: set[TopicPartition] = set()
        self._assignment: list[TopicPartition] = []
        self._closed = False
        self._join_ref: Any = broker.join.remote(group, self.member_id, self.topics)

    def __repr__(self) -> str:
        return f"EmbeddedConsumer(group={self.group!r}, member_id={self.member_id!r})"

    # sync API -----------------------------------------------------------------------------

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Return up to ``max_records`` records, waiting up to ``timeout_s`` if none are ready."""
        self._check_open()
        if self._join_ref is not None:
            self._assignment = ray.get(self._join_ref)
            self._join_ref = None
        rows, assignment = ray.get(self._fetch_ref(max_records, timeout_s))
        self._set_assignment(assignment)
        return to_records(rows)

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit next-offsets-to-read; offsets for partitions no longer owned are dropped."""
        self._check_open()
        if offsets:
            self._refused(ray.get(self._broker.commit.remote(self.group, self.member_id, offsets)))

    def assignment(self) -> list[TopicPartition]:
        """The partitions assigned at the last join or poll."""
        if self._join_ref is not None:
            self._assignment = ray.get(self._join_ref)
            self._join_ref = None
        return list(self._assignment)

    def pause(self, partitions: list[TopicPartition]) -> None:
        """Stop fetching from these partitions until resumed (client-side)."""
        self._paused.update((t, p) for t, p in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        """Fetch from these partitions again."""
        self._paused.difference_update((t, p) for t, p in partitions)

    def paused(self) -> list[TopicPartition]:
        """The currently paused partitions."""
        return sorted(self._paused)

    def close(self) -> None:
        """Leave the group (idempotent); its partitions go to the other members."""
        if self._closed:
            return
        self._closed = True
        ray.get(self._broker.leave.remote(self.group, self.member_id))

    # async API ----------------------------------------------------------------------------

    async def poll_async(self, max_records: int, timeout_s: float) -> list[Record]:
        """Like :meth:`poll`, awaiting the actor call instead of blocking."""
        self._check_open()
        if self._join_ref is not None:
            self._assignment = await self._join_ref
            self._join_ref = None
        rows, assignment = await self._fetch_ref(max_records, timeout_s)
        self._set_assignment(assignment)
        return to_records(rows)

    async def commit_async(self, offsets: dict[TopicPartition, int]) -> None:
        """Like :meth:`commit`, awaiting the actor call."""
        self._check_open()
        if offsets:
            self._refused(await self._broker.commit.remote(self.group, self.member_id, offsets))

    async def close_async(self) -> None:
        """Like :meth:`close`, awaiting the actor call."""
        if self._closed:
            return
        self._closed = True
        await self._broker.leave.remote(self.group, self.member_id)

    # context manager ----------------------------------------------------------------------

    def __enter__(self) -> EmbeddedConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals ----------------------------------------------------------------------------

    def _fetch_ref(self, max_records: int, timeout_s: float) -> Any:
        return self._broker.fetch.remote(
            self.group,
            self.member_id,
            max_records,
            timeout_s,
            list(self._paused),
            self.topics,
        )

    def _set_assignment(self, assignment: list[TopicPartition]) -> None:
        self._assignment = assignment
        # Like Kafka, pausing applies to assigned partitions; revoked ones drop their pause.
        self._paused.intersection_update(assignment)

    def _refused(self, refused: set[TopicPartition]) -> None:
        if refused:
            log.warning(
                "embedded bus: %s: commit refused for partitions not owned: %s",
                self.member_id,
                sorted(refused),
            )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")


class EmbeddedBus:
    """A picklable handle on the embedded broker actor (implements :class:`fxray.bus.EventBus`).

    Create with :meth:`start` (get-or-create the named actor) or :meth:`connect`; pass the handle
    to other tasks and actors freely.
    """

    def __init__(self, actor: Any, name: str | None = None) -> None:
        self.actor = actor
        self.name = name

    def __repr__(self) -> str:
        return f"EmbeddedBus(name={self.name!r})"

    @classmethod
    def start(
        cls,
        name: str = DEFAULT_BUS_NAME,
        namespace: str | None = None,
        default_partitions: int = 4,
        session_timeout_s: float = 10.0,
    ) -> EmbeddedBus:
        """Get the named broker actor, creating it if it does not exist.

        ``default_partitions`` and ``session_timeout_s`` only apply when it is created. The actor
        has the default lifetime: it lives as long as the job (driver) that created it.
        """
        actor = _BrokerActor.options(
            name=name,
            namespace=namespace,
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=1000,
        ).remote(default_partitions, session_timeout_s)
        ray.get(actor.ping.remote())
        return cls(actor, name)

    @classmethod
    def connect(cls, name: str = DEFAULT_BUS_NAME, namespace: str | None = None) -> EmbeddedBus:
        """Get an existing broker actor; raises ``ValueError`` if there is none."""
        return cls(ray.get_actor(name, namespace=namespace), name)

    def ensure_topic(self, topic: str, partitions: int) -> None:
        """Create the topic, or grow it to ``partitions``; never shrinks."""
        ray.get(self.actor.ensure_topic.remote(topic, partitions))

    def produce(self, topic: str, records: list[OutgoingRecord]) -> None:
        """Append a batch with one actor call; returns once appended.

        Batches from one caller land in call order because each call waits for the previous.
        """
        if records:
            ray.get(self.actor.produce_rows.remote(topic, to_out_rows(records)))

    async def produce_async(self, topic: str, records: list[OutgoingRecord]) -> None:
        """Like :meth:`produce`, awaiting the actor call. Await one before the next to keep
        order: concurrent calls may be appended in any order."""
        if records:
            await self.actor.produce_rows.remote(topic, to_out_rows(records))

    def produce_offsets(self, topic: str, records: list[OutgoingRecord]) -> list[tuple[int, int]]:
        """Like :meth:`produce`, returning ``(partition, offset)`` per record."""
        if not records:
            return []
        return ray.get(self.actor.produce_rows.remote(topic, to_out_rows(records)))

    def consumer(
        self, group: str, topics: list[str], member_id: str | None = None
    ) -> EmbeddedConsumer:
        """A new member of ``group`` subscribed to ``topics`` (``member_id``: a stable name)."""
        return EmbeddedConsumer(self.actor, group, topics, member_id)

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset to be written, per partition."""
        return ray.get(self.actor.end_offsets.remote(topic))

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offsets, per partition (0 where nothing is committed)."""
        return ray.get(self.actor.committed.remote(group, topic))

    def lag(self, group: str, topic: str) -> int:
        """Records of ``topic`` not yet committed by ``group``."""
        return ray.get(self.actor.lag.remote(group, topic))

    def topics(self) -> dict[str, int]:
        """Topic names and partition counts."""
        return ray.get(self.actor.topics.remote())

    def members(self, group: str) -> list[str]:
        """The group's current member ids."""
        return ray.get(self.actor.members.remote(group))

    def read(self, topic: str, partition: int, offset: int, max_records: int) -> list[Record]:
        """Read records without a consumer group (tools and tests)."""
        return to_records(ray.get(self.actor.read.remote(topic, partition, offset, max_records)))

    def shutdown(self) -> None:
        """Kill the broker actor; everything on the bus is lost."""
        ray.kill(self.actor, no_restart=True)
