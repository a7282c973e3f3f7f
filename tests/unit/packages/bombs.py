"""Hostile zips built in memory: lying headers, many entries, huge or highly compressed entries."""

from __future__ import annotations

import io
import json
import struct
import zipfile

MIB = 1024 * 1024
BOMB_BYTES = 200 * MIB
CLAIMED_BYTES = 1000
BOMB_ENTRY = "data.bin"

_LOCAL = b"PK\x03\x04"
_CENTRAL = b"PK\x01\x02"
_EOCD = b"PK\x05\x06"


def manifest(name: str = "bomb") -> bytes:
    return json.dumps({"name": name, "entrypoint": "main.py"}).encode()


def zip_with_zeros(size: int, *, name: str = BOMB_ENTRY, service: str = "bomb") -> bytes:
    """A valid package plus ``name``: ``size`` zero bytes, deflated (written 1 MiB at a time)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("manifest.json", manifest(service))
        zf.writestr("main.py", "print('hi')\n")
        block = bytes(MIB)
        with zf.open(name, "w") as entry:
            for _ in range(size // MIB):
                entry.write(block)
            entry.write(bytes(size % MIB))
    return out.getvalue()


def patch_claimed_size(data: bytes, name: str, claimed: int) -> bytes:
    """``data`` with the uncompressed size of entry ``name`` replaced by ``claimed`` in its local
    file header and its central directory record (the CRC-32 and the data are left as they are)."""
    patched = bytearray(data)
    name_bytes = name.encode()
    found = 0
    pos = 0
    while (pos := data.find(_LOCAL, pos)) >= 0:  # local header: size at +22, name length at +26
        (length,) = struct.unpack_from("<H", data, pos + 26)
        if data[pos + 30 : pos + 30 + length] == name_bytes:
            struct.pack_into("<L", patched, pos + 22, claimed)
            found += 1
        pos += 4
    pos = 0
    while (pos := data.find(_CENTRAL, pos)) >= 0:  # central record: size at +24, name at +46
        (length,) = struct.unpack_from("<H", data, pos + 28)
        if data[pos + 46 : pos + 46 + length] == name_bytes:
            struct.pack_into("<L", patched, pos + 24, claimed)
            found += 1
        pos += 4
    assert found == 2, f"entry {name!r}: {found} headers patched"
    return bytes(patched)


def lying_bomb(size: int = BOMB_BYTES, claimed: int = CLAIMED_BYTES) -> bytes:
    """A package zip whose entry ``data.bin`` claims ``claimed`` bytes in both headers but whose
    deflate stream expands to ``size`` zero bytes (its CRC-32 is that of the real data)."""
    return patch_claimed_size(zip_with_zeros(size), BOMB_ENTRY, claimed)


def many_entries(count: int, *, claimed_count: int | None = None) -> bytes:
    """A package zip listing ``count`` entries (junk ``__pycache__`` files after the package);
    with ``claimed_count`` its end record claims that many instead."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("manifest.json", manifest("many"))
        zf.writestr("main.py", "")
        for i in range(count - 2):
            zf.writestr(f"__pycache__/m{i}.pyc", b"")
    data = bytearray(out.getvalue())
    if claimed_count is not None:
        end = data.rfind(_EOCD)
        struct.pack_into("<HH", data, end + 8, claimed_count, claimed_count)
    return bytes(data)
