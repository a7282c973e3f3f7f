"""fxray.packages.archive: hostile zips and folders are refused by their real sizes, in bounded
memory; normal packages still load."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fxray.packages.archive import (
    ArchiveError,
    ArchiveLimits,
    BoundedZip,
    EntryError,
    count_zip_entries,
)
from fxray.services import PackageError, load_package, load_package_bytes
from fxray.settings import Settings
from tests.unit.packages.bombs import (
    BOMB_BYTES,
    BOMB_ENTRY,
    CLAIMED_BYTES,
    MIB,
    lying_bomb,
    manifest,
    many_entries,
    zip_with_zeros,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
LIMITS = ArchiveLimits()
HEADROOM = 8 * MIB
"""Peak memory allowed above the chunk size while a bomb is refused."""


def peak_of(call: Callable[[], Any]) -> tuple[int, BaseException | None]:
    """Peak bytes of Python allocations (tracemalloc) while ``call`` runs, and what it raised."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        raised: BaseException | None = None
        try:
            call()
        except Exception as exc:
            raised = exc
        return tracemalloc.get_traced_memory()[1], raised
    finally:
        tracemalloc.stop()


def problems(data: bytes, limits: ArchiveLimits = LIMITS) -> list[str]:
    with pytest.raises(PackageError) as info:
        load_package_bytes(data, limits=limits)
    return info.value.problems


def plain_zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb() -> Iterator[bytes]:
    """0.2 MB: ``data.bin`` claims 1,000 bytes in both headers and expands to 200 MB."""
    yield lying_bomb()


# -- (a) lying headers --------------------------------------------------------------------------


def test_the_bomb_is_real_for_a_whole_entry_read(bomb: bytes) -> None:
    """Calibrates the next test: the code before bounded reading did ``ZipFile.read(info)``
    once the *claimed* sizes passed (1,000 bytes here). zipfile then inflates the whole entry in
    one call (``decompress(data, 1 GiB)``) and only then cuts it to the claimed size, so the same
    zip costs more than its 200 MB (~440 MB measured) before the CRC-32 check refuses it."""
    assert len(bomb) < 300 * 1024
    with zipfile.ZipFile(io.BytesIO(bomb)) as zf:
        info = zf.getinfo(BOMB_ENTRY)
        assert info.file_size == CLAIMED_BYTES
        peak, raised = peak_of(lambda: zf.read(info))
    assert isinstance(raised, zipfile.BadZipFile)
    assert peak > BOMB_BYTES > LIMITS.chunk_bytes + HEADROOM


def test_lying_headers_bomb_is_refused_in_bounded_memory(bomb: bytes) -> None:
    """The same zip through the loader: refused, with a peak near the chunk size (~0.3 MB
    measured), not the 200 MB the entry expands to."""
    peak, raised = peak_of(lambda: load_package_bytes(bomb, limits=LIMITS))
    assert isinstance(raised, PackageError), raised
    print(f"\npeak while refusing the lying-header bomb: {peak} bytes")
    assert peak < LIMITS.chunk_bytes + HEADROOM, peak
    assert raised.problems == [
        f"zip entry {BOMB_ENTRY!r} is corrupt: its data does not match the size and CRC-32 its "
        f"headers claim (Bad CRC-32 for file {BOMB_ENTRY!r})"
    ]


def test_real_bytes_are_counted_whatever_the_headers_claim() -> None:
    """Reading an entry stops at the first chunk past a cap, counted from the real bytes."""
    data = plain_zip({"a.bin": os.urandom(3 * MIB)}, zipfile.ZIP_STORED)
    limits = ArchiveLimits(max_entry_bytes=MIB)
    with BoundedZip(data, limits) as zf:
        (info,) = zf.infolist()
        peak, raised = peak_of(lambda: zf.read(info))
    assert isinstance(raised, ArchiveError)
    assert str(raised) == (
        f"zip entry 'a.bin' unpacks to more than the limit of {MIB} bytes per file"
    )
    assert peak < MIB + limits.chunk_bytes + HEADROOM

    data = plain_zip({"a.bin": os.urandom(600_000), "b.bin": os.urandom(600_000)})
    with BoundedZip(data, ArchiveLimits(max_total_bytes=MIB)) as zf:
        first, second = zf.infolist()
        zf.read(first)
        with pytest.raises(ArchiveError, match=r"more than the limit of 1048576 bytes \(reached"):
            zf.read(second)


# -- (b) many entries ---------------------------------------------------------------------------


def test_too_many_entries_is_refused_before_the_listing_is_parsed() -> None:
    data = many_entries(LIMITS.max_entries + 1)
    peak, raised = peak_of(lambda: load_package_bytes(data, limits=LIMITS))
    assert isinstance(raised, PackageError)
    assert raised.problems == ["zip lists 10001 entries, more than the limit of 10000"]
    assert peak < LIMITS.chunk_bytes + HEADROOM
    assert load_package_bytes(many_entries(LIMITS.max_entries)).name == "many"


def test_an_end_record_that_understates_the_entries_does_not_help() -> None:
    data = many_entries(30, claimed_count=5)
    assert count_zip_entries(data, 100) == (5, 30)
    assert count_zip_entries(data, 9) == (5, 10)  # stops after the limit + 1
    assert problems(data, ArchiveLimits(max_entries=20)) == [
        "zip lists more than 20 entries (its end record claims 5), more than the limit of 20"
    ]


def test_entries_of_a_zip64_end_record_are_counted() -> None:
    plain = many_entries(30)
    end = plain.rfind(b"PK\x05\x06")
    _, _, _, _, count, size, offset, _ = struct.unpack_from("<4s4H2LH", plain, end)
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, size, offset, 0)
    data = plain[:end] + record + locator + eocd
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # zipfile reads it like this
        assert len(zf.infolist()) == 30
    assert count_zip_entries(data, 100) == (30, 30)
    assert problems(data, ArchiveLimits(max_entries=20)) == [
        "zip lists 30 entries, more than the limit of 20"
    ]


def test_too_many_files() -> None:
    files = {"manifest.json": manifest("x"), "main.py": b"", **{f"f{i}.py": b"" for i in range(5)}}
    assert problems(plain_zip(files), ArchiveLimits(max_files=5)) == [
        "zip has 7 files, more than the limit of 5"
    ]


# -- (c) one huge entry -------------------------------------------------------------------------


def test_a_huge_entry_is_refused_on_its_claim_without_reading_it() -> None:
    data = zip_with_zeros(BOMB_BYTES)  # honest headers
    peak, raised = peak_of(lambda: load_package_bytes(data, limits=LIMITS))
    assert isinstance(raised, PackageError)
    assert raised.problems == [
        f"zip entry {BOMB_ENTRY!r} claims {BOMB_BYTES} bytes, more than the limit of "
        f"{LIMITS.max_entry_bytes} bytes per file"
    ]
    assert peak < LIMITS.chunk_bytes + HEADROOM


def test_the_zip_itself_is_limited(tmp_path: Path) -> None:
    data = plain_zip({"manifest.json": manifest("x"), "main.py": os.urandom(5000)})
    limits = ArchiveLimits(max_archive_bytes=1000)
    assert problems(data, limits) == [f"zip is {len(data)} bytes, more than the limit of 1000"]
    path = tmp_path / "svc.zip"
    path.write_bytes(data)
    with pytest.raises(PackageError) as info:
        load_package(path, limits)  # checked with stat, before reading the file
    assert info.value.problems == [f"zip is {len(data)} bytes, more than the limit of 1000"]


# -- (d) high ratio -----------------------------------------------------------------------------


def test_a_highly_compressed_entry_is_refused() -> None:
    data = zip_with_zeros(5 * MIB)  # ~1000:1, under every size limit
    (problem,) = problems(data)
    assert problem.startswith(f"zip entry {BOMB_ENTRY!r} claims {5 * MIB} bytes from ")
    assert problem.endswith("compressed bytes, more than the compression ratio limit of 200")
    with BoundedZip(data, LIMITS) as zf:  # the real bytes are checked too, past the floor
        info = zf.zip.getinfo(BOMB_ENTRY)
        peak, raised = peak_of(lambda: zf.read(info))
    assert isinstance(raised, ArchiveError)
    assert "expands to over 1" in str(raised) and "ratio limit of 200" in str(raised)
    assert peak < LIMITS.ratio_floor_bytes + LIMITS.chunk_bytes + HEADROOM


def test_small_repetitive_files_are_fine() -> None:
    text = b"print('the same line again')\n" * 30_000  # ~870 KB, compressed far more than 200:1
    data = plain_zip({"manifest.json": manifest("texty"), "main.py": text})
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo("main.py")
        assert info.file_size / info.compress_size > LIMITS.max_ratio
    assert load_package_bytes(data).files["main.py"] == text


@pytest.mark.parametrize(
    ("method", "name"), [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "LZMA")]
)
def test_only_stored_and_deflate_entries_are_read(method: int, name: str) -> None:
    """zipfile inflates a whole bzip2 or LZMA block per read, whatever the chunk size asked."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("manifest.json", manifest("x"))
        zf.writestr("main.py", b"print(1)\n")
        zf.writestr("data.bin", b"\0" * 1000, compress_type=method)
    assert problems(out.getvalue()) == [
        f"zip entry 'data.bin' uses {name} compression; only stored and deflate entries are "
        "accepted"
    ]


# -- (e) normal packages ------------------------------------------------------------------------


def test_a_normal_package_loads() -> None:
    folder = EXAMPLES / "greeter"
    package = load_package(folder)
    again = load_package_bytes(package.to_zip(), limits=LIMITS)
    assert again.content_hash == package.content_hash
    stored = plain_zip(package.files, zipfile.ZIP_STORED)
    assert load_package_bytes(stored).content_hash == package.content_hash


def test_a_corrupt_entry_is_listed_and_the_others_read() -> None:
    data = bytearray(plain_zip({"manifest.json": manifest("x"), "main.py": b"print(1)\n" * 9}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("main.py")
    start = info.header_offset + 30 + len("main.py")
    data[start + 2] ^= 0xFF  # damage the deflate stream
    found = problems(bytes(data))
    assert len(found) == 2 and found[0].startswith("zip entry 'main.py' ")
    assert found[1] == "script 'main.py' named in entrypoint does not exist"


# -- folders (fxray validate, git checkouts) ------------------------------------------------------


def write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_a_huge_file_in_a_folder_is_refused_without_reading_it(tmp_path: Path) -> None:
    folder = write(tmp_path / "svc", {"manifest.json": manifest("x"), "main.py": b""})
    with open(folder / "big.bin", "wb") as f:
        f.truncate(BOMB_BYTES)  # sparse: no disk used
    peak, raised = peak_of(lambda: load_package(folder))
    assert isinstance(raised, PackageError)
    assert raised.problems == [
        f"big.bin is {BOMB_BYTES} bytes, more than the limit of {LIMITS.max_entry_bytes} bytes "
        "per file"
    ]
    assert peak < LIMITS.chunk_bytes + HEADROOM


def test_a_folder_with_too_many_entries_stops_listing(tmp_path: Path) -> None:
    folder = write(tmp_path / "svc", {"manifest.json": manifest("x"), "main.py": b""})
    write(folder, {f"__pycache__/m{i}.pyc": b"" for i in range(30)})
    write(folder, {f"data/{i}.txt": b"" for i in range(30)})
    assert load_package(folder, ArchiveLimits(max_entries=40)).name == "x"  # junk is not walked
    with pytest.raises(PackageError) as info:
        load_package(folder, ArchiveLimits(max_entries=20))
    assert info.value.problems == ["package folder has more than the limit of 20 entries"]


# -- limits -------------------------------------------------------------------------------------


def test_limits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ArchiveLimits.from_settings(Settings()) == ArchiveLimits()
    monkeypatch.setenv("FXRAY_PACKAGE_MAX_ENTRIES", "50")
    monkeypatch.setenv("FXRAY_ARCHIVE_MAX_RATIO", "50")
    monkeypatch.setenv("FXRAY_ARCHIVE_CHUNK_BYTES", "8192")
    limits = ArchiveLimits.from_settings(Settings())
    assert (limits.max_entries, limits.max_ratio, limits.chunk_bytes) == (50, 50.0, 8192)
    with pytest.raises(ValueError, match="max_entries must be at least 1"):
        ArchiveLimits(max_entries=0)


def test_entry_errors_name_the_entry() -> None:
    data = plain_zip({"a.txt": b"x"})
    with BoundedZip(data) as zf:
        (info,) = zf.infolist()
        info.flag_bits |= 0x1  # claims to be encrypted
        with pytest.raises(EntryError, match=r"zip entry 'a\.txt' cannot be read: "):
            zf.read(info)
