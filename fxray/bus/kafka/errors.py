"""The Kafka bus's errors: :class:`BusError`, and helpers that read librdkafka's errors."""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger("fxray.bus.kafka")


# Errors a consumer reports for a subscribed topic that does not exist (yet): like the embedded
# bus, its partitions are assigned once it is created.
_MISSING_TOPIC = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
}
# Commit errors that mean "this member no longer owns these partitions" (a rebalance happened).
_NOT_OWNER = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError.STALE_MEMBER_EPOCH,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._STATE,
}


class BusError(RuntimeError):
    """The Kafka bus failed: a delivery report, an admin request or the consumer reported an
    error that is not retried."""


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def _log_error(client: str) -> Callable[[KafkaError], None]:
    def error_cb(err: KafkaError) -> None:
        level = logging.ERROR if err.fatal() else logging.WARNING
        log.log(level, "kafka %s: %s", client, err)

    return error_cb
