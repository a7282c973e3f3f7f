"""The Kafka event bus on confluent-kafka: :class:`KafkaBus` and :class:`KafkaConsumer`.

Semantics match the embedded bus (:mod:`fxray.bus.embedded`):

* Keys are placed by librdkafka's default ``consistent_random`` partitioner, which is
  ``zlib.crc32(key) % partitions`` like the embedded bus; records without a key go to a random
  (sticky, per ``linger.ms`` batch) partition rather than round-robin.
* A committed offset is the offset of the *next* record to read.
* A partition (re)assigned to a member is read from the group's committed offset
  (``auto.offset.reset=earliest`` when there is none): at-least-once. A member that keeps a
  partition across a rebalance keeps its position (and its pause), although the default eager
  protocol revokes everything on every rebalance.
* Commits for partitions the member does not own (any more) are logged and dropped.
* Producing to a missing topic creates it with ``default_partitions``; topics are never
  auto-created by metadata requests (``allow.auto.create.topics=false`` everywhere).

Every librdkafka client is created lazily in the process that uses it, so a :class:`KafkaBus`
pickles as its configuration and can be handed to Ray tasks and actors.

The modules: :mod:`~fxray.bus.kafka.errors` (:class:`BusError`, reading librdkafka's errors),
:mod:`~fxray.bus.kafka.producer` (delivery tracking, the polled producer),
:mod:`~fxray.bus.kafka.consumer` (:class:`KafkaConsumer`, messages as records) and
:mod:`~fxray.bus.kafka.bus` (:class:`KafkaBus`: settings, topics, produce, consumers, offsets).
"""

from fxray.bus.kafka.bus import KafkaBus
from fxray.bus.kafka.consumer import KafkaConsumer
from fxray.bus.kafka.errors import BusError

__all__ = ["BusError", "KafkaBus", "KafkaConsumer"]
