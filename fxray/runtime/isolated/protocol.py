"""The frames an executor and its isolated worker process exchange over two pipes.

A frame is a 4-byte big-endian length, then that many bytes of JSON: one object with an
``op``. JSON is written ASCII-only (``\\uXXXX`` escapes), so any Python string crosses,
lone surrogates included. This module uses the standard library only: the worker process
loads it by its file path, with none of fxray's dependencies on its import path.

executor -> worker: ``run`` (a run to do), ``reply`` (the answer to a ``call``), ``exit``.
worker -> executor: ``ready`` (once, at start), ``log`` (log lines while a run goes on),
``step`` (a step starts or ends), ``call`` (a context call only the executor can answer:
``events.send``, ``state.*``), ``done`` (the run's outcome).
"""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 512 * 1024 * 1024

RUN = "run"
REPLY = "reply"
EXIT = "exit"
READY = "ready"
LOG = "log"
STEP = "step"
CALL = "call"
DONE = "done"


class ProtocolError(RuntimeError):
    """A frame that is cut short, too large, or not a JSON object."""


def encode(message: dict[str, Any], *, allow_nan: bool = True) -> bytes:
    """One frame's bytes; ``TypeError``/``ValueError`` if ``message`` is not JSON data (or,
    with ``allow_nan=False``, holds a NaN or an infinity)."""
    payload = json.dumps(message, separators=(",", ":"), allow_nan=allow_nan).encode("ascii")
    if len(payload) > MAX_FRAME_BYTES:
        raise ValueError(f"a frame of {len(payload)} bytes is over {MAX_FRAME_BYTES}")
    return HEADER.pack(len(payload)) + payload


def write_frame(stream: BinaryIO, message: dict[str, Any]) -> None:
    """Write one frame and flush it."""
    stream.write(encode(message))
    stream.flush()


def read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    """The next frame's object, or ``None`` at the end of the stream (the other side closed
    its pipe or died between frames)."""
    header = stream.read(HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise ProtocolError("the stream ended inside a frame header")
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {size} bytes is over {MAX_FRAME_BYTES}")
    payload = stream.read(size)
    if len(payload) < size:
        raise ProtocolError(f"the stream ended {size - len(payload)} bytes before a frame's end")
    try:
        message = json.loads(payload)
    except ValueError as exc:
        raise ProtocolError(f"a frame is not JSON: {exc}") from exc
    if not isinstance(message, dict) or "op" not in message:
        raise ProtocolError("a frame is not an object with an 'op'")
    return message
