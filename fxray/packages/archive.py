"""Bounded reading of user-supplied zips and files: real sizes, counted while decompressing.

Every zip or folder fxray reads on a user's behalf (a service upload, ``fxray validate``, the
service folders of a git checkout) is read through :class:`BoundedZip` or
:func:`read_file_bounded` under one :class:`ArchiveLimits`:

- the zip's central directory is walked (no objects made) and refused above ``max_entries``
  before :mod:`zipfile` parses it;
- what the headers claim is refused early (too many files, too large, too compressed), but never
  trusted: each entry is read with :meth:`zipfile.ZipFile.open` in ``chunk_bytes`` pieces and
  its *real* bytes are counted against the per-entry and total caps and the compression ratio
  (checked once an entry is past ``ratio_floor_bytes``), stopping at the first chunk over;
- only stored and deflate entries are read: zipfile's bzip2 and LZMA readers inflate a whole
  compressed block at once, so their memory cannot be bounded by the chunk size.

Memory while refusing an archive therefore stays near ``chunk_bytes``, however large its
entries really expand.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fxray.settings import Settings

__all__ = [
    "ArchiveError",
    "ArchiveLimits",
    "BoundedZip",
    "EntryError",
    "count_zip_entries",
    "read_file_bounded",
]

KIB = 1024
MIB = 1024 * KIB

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_EOCD = b"PK\x06\x06"
_ZIP64_EOCD_SIZE = 56
_CENTRAL = b"PK\x01\x02"
_CENTRAL_SIZE = 46
_MAX_COMMENT = 0xFFFF
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}


class ArchiveError(ValueError):
    """The archive is refused (a limit is exceeded); the message names the entry and limit."""


class EntryError(ValueError):
    """One entry cannot be read (corrupt, encrypted, unsupported); others may still be."""


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """What one archive (or package folder) may hold. Defaults match the settings' defaults."""

    max_archive_bytes: int = 50 * MIB
    """Bytes of the zip itself (an upload's size)."""
    max_entries: int = 10_000
    """Entries a zip may list (files, folders, junk), or a folder may hold, before reading."""
    max_files: int = 1000
    """Files a package keeps."""
    max_entry_bytes: int = 50 * MIB
    """Real bytes of one file."""
    max_total_bytes: int = 50 * MIB
    """Real bytes of all files."""
    max_ratio: float = 200.0
    """Real bytes / compressed bytes of one entry, checked past ``ratio_floor_bytes``."""
    ratio_floor_bytes: int = 1 * MIB
    """Entries up to this size may be compressed any amount (small repetitive text)."""
    chunk_bytes: int = 64 * KIB
    """Bytes decompressed per step."""

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            low = 0 if item.name == "ratio_floor_bytes" else 1
            if value < low:
                raise ValueError(f"ArchiveLimits.{item.name} must be at least {low}, not {value}")

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveLimits:
        """The limits an installation's settings give."""
        return cls(
            max_archive_bytes=settings.package_max_upload_bytes,
            max_entries=settings.package_max_entries,
            max_files=settings.package_max_files,
            max_entry_bytes=settings.package_max_entry_bytes,
            max_total_bytes=settings.package_max_total_bytes,
            max_ratio=settings.archive_max_ratio,
            ratio_floor_bytes=settings.archive_ratio_floor_bytes,
            chunk_bytes=settings.archive_chunk_bytes,
        )


# -- the central directory ----------------------------------------------------------------------


def count_zip_entries(data: bytes, stop_after: int) -> tuple[int, int] | None:
    """``(entries the end record claims, entries found in the central directory)``.

    The walk stops once it has found ``stop_after + 1`` entries. None if there is no end
    record (not a zip: :mod:`zipfile` says why). Makes no objects per entry.
    """
    end = len(data) - _EOCD_SIZE  # the record zipfile uses: this one, else the last one found
    if end < 0 or data[end : end + 4] != _EOCD or data[-2:] != b"\0\0":
        end = data.rfind(_EOCD, max(0, len(data) - _EOCD_SIZE - _MAX_COMMENT))
    if end < 0 or end + _EOCD_SIZE > len(data):
        return None
    _, _, _, _, claimed, cd_size, _, _ = struct.unpack_from("<4s4H2LH", data, end)
    cd_end = end
    locator = end - _ZIP64_LOCATOR_SIZE
    record = locator - _ZIP64_EOCD_SIZE
    zip64 = record >= 0 and data[locator : locator + 4] == _ZIP64_LOCATOR
    if zip64 and data[record : record + 4] == _ZIP64_EOCD:
        claimed, cd_size = struct.unpack_from("<QQ", data, record + 32)
        cd_end = record
    found = 0
    pos = max(0, cd_end - cd_size)
    while pos + _CENTRAL_SIZE <= cd_end and found <= stop_after:
        if data[pos : pos + 4] != _CENTRAL:
            break  # zipfile refuses a broken directory
        name, extra, comment = struct.unpack_from("<3H", data, pos + 28)
        pos += _CENTRAL_SIZE + name + extra + comment
        found += 1
    return claimed, found


def _check_entry_count(data: bytes, limits: ArchiveLimits) -> None:
    counted = count_zip_entries(data, limits.max_entries)
    if counted is None:
        return
    claimed, found = counted
    cap = limits.max_entries
    if claimed > cap:
        raise ArchiveError(f"zip lists {claimed} entries, more than the limit of {cap}")
    if found > cap:
        raise ArchiveError(
            f"zip lists more than {cap} entries (its end record claims {claimed}), more than "
            f"the limit of {cap}"
        )


# -- reading ------------------------------------------------------------------------------------


class BoundedZip:
    """A zip opened under :class:`ArchiveLimits`; :meth:`read` counts real bytes as it goes.

    Opening raises :class:`ArchiveError` when the zip is larger than ``max_archive_bytes`` or
    lists more than ``max_entries`` entries, and what :class:`zipfile.ZipFile` raises for a
    zip it cannot parse (``BadZipFile``, ...).
    """

    def __init__(self, data: bytes, limits: ArchiveLimits | None = None) -> None:
        self.limits = limits or ArchiveLimits()
        if len(data) > self.limits.max_archive_bytes:
            raise ArchiveError(
                f"zip is {len(data)} bytes, more than the limit of {self.limits.max_archive_bytes}"
            )
        _check_entry_count(data, self.limits)
        self.zip = zipfile.ZipFile(io.BytesIO(data))
        self.size = len(data)
        self.total = 0
        """Real bytes read so far, all entries."""
        if len(self.zip.infolist()) > self.limits.max_entries:  # the walk above missed some
            count = len(self.zip.infolist())
            self.zip.close()
            raise ArchiveError(
                f"zip lists {count} entries, more than the limit of {self.limits.max_entries}"
            )

    def __enter__(self) -> BoundedZip:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.zip.close()

    def infolist(self) -> list[zipfile.ZipInfo]:
        return self.zip.infolist()

    def check_claims(self, entries: list[zipfile.ZipInfo]) -> None:
        """Refuse ``entries`` (the ones to be read) on what their headers claim: a fast
        refusal only; :meth:`read` checks the real bytes whatever the headers say."""
        limits = self.limits
        if len(entries) > limits.max_files:
            raise ArchiveError(
                f"zip has {len(entries)} files, more than the limit of {limits.max_files}"
            )
        for info in entries:
            if info.file_size > limits.max_entry_bytes:
                raise ArchiveError(
                    f"zip entry {info.filename!r} claims {info.file_size} bytes, more than the "
                    f"limit of {limits.max_entry_bytes} bytes per file"
                )
            self._check_ratio(info, info.file_size, real=False)
        claimed = sum(info.file_size for info in entries)
        if claimed > limits.max_total_bytes:
            raise ArchiveError(
                f"zip unpacks to {claimed} bytes, more than the limit of {limits.max_total_bytes}"
            )

    def _check_ratio(self, info: zipfile.ZipInfo, size: int, *, real: bool) -> None:
        limits = self.limits
        if size <= limits.ratio_floor_bytes:
            return
        packed = max(info.compress_size, 1)
        if size > limits.max_ratio * packed:
            expands = f"expands to over {size}" if real else f"claims {size}"
            raise ArchiveError(
                f"zip entry {info.filename!r} {expands} bytes from {packed} compressed bytes, "
                f"more than the compression ratio limit of {limits.max_ratio:g}"
            )

    def chunks(self, info: zipfile.ZipInfo) -> Iterator[bytes]:
        """The entry's bytes, ``chunk_bytes`` at a time, each counted before it is yielded.

        Raises :class:`ArchiveError` at the first chunk past a limit, :class:`EntryError` if
        the entry cannot be read (its data does not match its headers, encrypted, ...).
        """
        limits = self.limits
        method = info.compress_type
        if method not in _METHODS:
            kind = _METHOD_NAMES.get(method, f"method {method}")
            raise EntryError(
                f"zip entry {info.filename!r} uses {kind} compression; only stored and "
                "deflate entries are accepted"
            )
        size = 0
        try:
            with self.zip.open(info) as entry:
                while chunk := entry.read(limits.chunk_bytes):
                    size += len(chunk)
                    self.total += len(chunk)
                    if size > limits.max_entry_bytes:
                        raise ArchiveError(
                            f"zip entry {info.filename!r} unpacks to more than the limit of "
                            f"{limits.max_entry_bytes} bytes per file"
                        )
                    if self.total > limits.max_total_bytes:
                        raise ArchiveError(
                            f"zip unpacks to more than the limit of {limits.max_total_bytes} "
                            f"bytes (reached in entry {info.filename!r})"
                        )
                    self._check_ratio(info, size, real=True)
                    yield chunk
        except zipfile.BadZipFile as exc:
            raise EntryError(
                f"zip entry {info.filename!r} is corrupt: its data does not match the size and "
                f"CRC-32 its headers claim ({exc})"
            ) from None
        except (ArchiveError, EntryError):
            raise
        except Exception as exc:  # encrypted, truncated, bad deflate data, ...
            raise EntryError(f"zip entry {info.filename!r} cannot be read: {exc}") from None

    def read(self, info: zipfile.ZipInfo) -> bytes:
        """The entry's bytes (see :meth:`chunks`)."""
        return b"".join(self.chunks(info))


def read_file_bounded(path: Path, limit: int, name: str | None = None) -> bytes:
    """A regular file's bytes, refused (:class:`ArchiveError`) if ``os.stat`` says it is larger
    than ``limit`` bytes (so it is never read), or if it grows past ``limit`` while read.
    ``name`` names it in messages (default: the path). Symlinks are not followed."""
    name = name or str(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    with os.fdopen(os.open(path, flags), "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise EntryError(f"{name}: not a regular file")
        if info.st_size > limit:
            raise ArchiveError(
                f"{name} is {info.st_size} bytes, more than the limit of {limit} bytes per file"
            )
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ArchiveError(f"{name} grew past the limit of {limit} bytes per file while read")
    return data
