"""The embedded event bus: a Kafka-like broker held by one Ray actor, so fxray needs no broker.

Three layers, one module each:

* :class:`EmbeddedLog` (:mod:`~fxray.bus.embedded.log`) -- the broker's state in plain Python
  (no Ray): topics of partitions, each an append-only list of records; consumer groups with
  Kafka's range assignor, per-member fetch positions, committed offsets, session expiry.
* :class:`EmbeddedBroker` (:mod:`~fxray.bus.embedded.broker`) -- the async Ray actor that owns
  one ``EmbeddedLog`` and adds long-polling fetches.
* :class:`EmbeddedBus` / :class:`EmbeddedConsumer` (:mod:`~fxray.bus.embedded.client`) --
  picklable client handles implementing the :class:`~fxray.bus.EventBus` and
  :class:`~fxray.bus.Consumer` protocols.

Semantics follow Kafka (and the confluent-kafka bus that shares the protocol):

* A key is placed on partition ``zlib.crc32(key) % partitions`` (librdkafka's
  ``consistent_random`` partitioner is CRC32 too); records without a key go round-robin.
* A committed offset is the offset of the *next* record to read.
* A partition (re)assigned to a member is read from the group's committed offset (0 if none),
  so records fetched but not committed by the previous owner are delivered again: at-least-once.
  A member that keeps a partition across a rebalance keeps its position.
* Commits for partitions the member does not own (any more) are refused.
* Members that have not fetched for ``session_timeout_s`` are expired and their partitions move.
* Nothing is persisted: the log lives as long as the actor.

Between clients and the actor, records travel as plain tuples (:data:`Row`, :data:`OutRow`):
pickling a list of tuples is about ten times cheaper than a list of dataclasses.
"""

from fxray.bus.embedded.broker import EmbeddedBroker
from fxray.bus.embedded.client import DEFAULT_BUS_NAME, EmbeddedBus, EmbeddedConsumer
from fxray.bus.embedded.log import (
    EmbeddedLog,
    OutRow,
    Row,
    UnknownMemberError,
    range_assign,
    to_out_rows,
    to_records,
)

__all__ = [
    "DEFAULT_BUS_NAME",
    "EmbeddedBroker",
    "EmbeddedBus",
    "EmbeddedConsumer",
    "EmbeddedLog",
    "OutRow",
    "Row",
    "UnknownMemberError",
    "range_assign",
    "to_out_rows",
    "to_records",
]
