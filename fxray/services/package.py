"""Service packages: a folder (or a .zip of one) with ``manifest.json``, scripts and extras.

Layout of a package::

    manifest.json       required, see :class:`~fxray.services.manifest.Manifest`
    *.py                the scripts named in ``entrypoint`` / ``execution_order``
    requirements.txt    optional, the service's own pip requirements (plain requirement lines)
    config.json         optional JSON object, given to the scripts
    secrets.json        optional JSON object, given to the scripts
    parameters.json     optional run parameters, see :mod:`fxray.services.parameters`
    README.md           optional

:func:`load_package` reads and validates a package, collecting *every* problem it finds into one
:class:`PackageError`. Junk (``__pycache__/``, ``*.pyc``, ``.git/``, ``.venv/``, ``.DS_Store``)
is left out, so it changes neither the package's files nor its :attr:`ServicePackage.content_hash`.
Reading is bounded by :class:`~fxray.packages.archive.ArchiveLimits` (entries, files, real bytes
per file and in all, compression ratio): zips are decompressed in chunks and folders are checked
with ``os.stat`` before a file is read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import ValidationError

from fxray.packages.archive import (
    ArchiveError,
    ArchiveLimits,
    BoundedZip,
    EntryError,
    read_file_bounded,
)
from fxray.services.manifest import (
    Manifest,
    execution_order_clash,
    format_validation_error,
    normalize_script_path,
    script_path_problem,
)
from fxray.services.parameters import Parameter, ParameterError, parse_parameter_fields

MANIFEST_FILE = "manifest.json"
REQUIREMENTS_FILE = "requirements.txt"
CONFIG_FILE = "config.json"
SECRETS_FILE = "secrets.json"
PARAMETERS_FILE = "parameters.json"
README_FILE = "README.md"

IGNORED_DIRS = frozenset({"__pycache__", ".git", ".venv", "__MACOSX"})
IGNORED_NAMES = frozenset({".DS_Store"})
IGNORED_SUFFIXES = (".pyc", ".pyo")

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)

_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_COMMENT_RE = re.compile(r"(^|\s)#.*$")
_INVALID = object()


class _Unreadable(Exception):
    """Reading stopped: the problems so far are all that can be said about the package."""


class PackageError(ValueError):
    """A service package is invalid; ``problems`` lists every problem found in it."""

    def __init__(self, problems: list[str], source: str = "package") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"service package {source} is invalid:\n{lines}")


@dataclass(frozen=True, eq=False)
class ServicePackage:
    """A validated service package. Equal packages have equal :attr:`content_hash`."""

    manifest: Manifest
    files: dict[str, bytes] = field(repr=False)
    content_hash: str
    requirements: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)
    parameters: list[Parameter] = field(default_factory=list, repr=False)
    readme: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The service name from the manifest."""
        return self.manifest.name

    @property
    def steps(self) -> list[str]:
        """The scripts to run, in order."""
        return self.manifest.steps

    @property
    def short_hash(self) -> str:
        """The first 12 hex digits of :attr:`content_hash`."""
        return self.content_hash[:12]

    @property
    def requirements_hash(self) -> str:
        """sha256 of the normalised, sorted requirement lines; ``""`` without requirements."""
        return requirements_hash(self.requirements)

    def to_zip(self) -> bytes:
        """A deterministic zip of :attr:`files` (sorted entries, 1980-01-01 timestamps)."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(self.files):
                info = zipfile.ZipInfo(path, date_time=ZIP_DATE_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                zf.writestr(info, self.files[path])
        return buf.getvalue()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServicePackage):
            return NotImplemented
        return self.content_hash == other.content_hash

    def __hash__(self) -> int:
        return hash(self.content_hash)


def compute_content_hash(files: Mapping[str, bytes]) -> str:
    """sha256 hex over the sorted ``(path, bytes)`` pairs; independent of order and mtimes."""
    digest = hashlib.sha256()
    for path in sorted(files):
        data = files[path]
        encoded = path.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def requirements_hash(requirements: list[str]) -> str:
    """sha256 of the normalised, sorted requirement lines; ``""`` for no requirements."""
    if not requirements:
        return ""
    lines = sorted({_normalize_requirement(line) for line in requirements})
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _normalize_requirement(line: str) -> str:
    try:
        req = Requirement(line)
    except InvalidRequirement:
        return line.strip()
    req.name = canonicalize_name(req.name)
    return str(req)


def parse_requirements(text: str, source: str = REQUIREMENTS_FILE) -> tuple[list[str], list[str]]:
    """``(requirement lines, problems)`` of a requirements.txt; comments and blanks dropped.

    Only plain requirement specifiers are allowed: option lines (``-e``, ``-r``, ``--index-url``
    ...) are problems, and so is any line :class:`packaging.requirements.Requirement` rejects.
    """
    requirements: list[str] = []
    problems: list[str] = []
    pending = ""
    pending_start = 0
    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        if not pending:
            pending_start = lineno
        line = _COMMENT_RE.sub("", raw_line)
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line = (pending + line).strip()
        pending = ""
        if not line:
            continue
        where = f"{source}: line {pending_start}"
        if line.startswith("-"):
            option = line.split()[0].split("=")[0]
            problems.append(
                f"{where}: option lines like {option!r} are not allowed; "
                "list plain requirements only"
            )
            continue
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0] if str(exc) else "invalid"
            problems.append(f"{where}: {line!r} is not a valid requirement: {_lower(reason)}")
            continue
        requirements.append(line)
    if pending.strip():
        problems.append(f"{source}: line {pending_start}: line continuation at end of file")
    return requirements, problems


def load_package(path: str | Path | bytes, limits: ArchiveLimits | None = None) -> ServicePackage:
    """Read and validate a package folder, a ``.zip`` file, or the bytes of a zip.

    ``limits`` bound what is read (default: the settings' defaults). Raises
    :class:`PackageError` listing every problem found.
    """
    limits = limits or ArchiveLimits()
    if isinstance(path, bytes | bytearray | memoryview):
        return load_package_bytes(bytes(path), limits=limits)
    source = str(path)
    root = Path(path)
    problems: list[str] = []
    try:
        if root.is_dir():
            files = _read_folder(root, problems, limits)
        elif root.is_file():
            size = root.stat().st_size
            if size > limits.max_archive_bytes:
                problems.append(
                    f"zip is {size} bytes, more than the limit of {limits.max_archive_bytes}"
                )
                raise _Unreadable
            files = _read_zip(root.read_bytes(), problems, limits)
        elif root.exists():
            problems.append("not a folder or a .zip file")
            raise _Unreadable
        else:
            problems.append("no such folder or file")
            raise _Unreadable
    except OSError as exc:
        raise PackageError([f"cannot read {source}: {exc.strerror or exc}"], source) from None
    except _Unreadable:
        raise PackageError(problems, source) from None
    return _build(files, source, problems)


def load_package_bytes(
    data: bytes, source: str = "upload", *, limits: ArchiveLimits | None = None
) -> ServicePackage:
    """Read and validate a package from the bytes of a zip (with or without a top folder),
    within ``limits`` (default: the settings' defaults)."""
    problems: list[str] = []
    try:
        files = _read_zip(bytes(data), problems, limits or ArchiveLimits())
    except _Unreadable:
        raise PackageError(problems, source) from None
    return _build(files, source, problems)


def package_from_files(files: Mapping[str, bytes], source: str = "files") -> ServicePackage:
    """Validate a package given as ``relative posix path -> bytes`` (junk is dropped)."""
    problems: list[str] = []
    kept: dict[str, bytes] = {}
    for path, data in files.items():
        if is_ignored(path):
            continue
        if _unsafe_path(path):
            problems.append(f"{path!r}: absolute path or '..' escapes the package (skipped)")
            continue
        kept[_clean_path(path)] = bytes(data)
    return _build(kept, source, problems)


def is_ignored(path: str) -> bool:
    """Whether a relative posix path is junk left out of packages."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if not parts:
        return True
    if any(part in IGNORED_DIRS for part in parts[:-1]):
        return True
    return parts[-1] in IGNORED_NAMES or parts[-1].endswith(IGNORED_SUFFIXES)


# --- reading ---------------------------------------------------------------------------------


def _read_folder(root: Path, problems: list[str], limits: ArchiveLimits) -> dict[str, bytes]:
    """The package files of a folder; each file's size is checked with ``os.stat`` before it is
    read, and the walk stops past ``limits.max_entries`` entries."""
    files: dict[str, bytes] = {}
    total = 0
    for rel_dir, here, dirs, names in _walk(root, problems, limits):
        dirs[:] = [d for d in dirs if _keep_dir(here, rel_dir, d, problems)]
        for name in names:
            full = here / name
            rel = (rel_dir / name).as_posix()
            if is_ignored(rel):
                continue
            if full.is_symlink():
                problems.append(f"{rel}: symlinks are not allowed in a package (skipped)")
                continue
            if not full.is_file():
                problems.append(f"{rel}: not a regular file (skipped)")
                continue
            if len(files) >= limits.max_files:
                problems.append(f"package has more than the limit of {limits.max_files} files")
                raise _Unreadable
            try:
                size = full.stat().st_size
                if size > limits.max_entry_bytes:
                    problems.append(
                        f"{rel} is {size} bytes, more than the limit of "
                        f"{limits.max_entry_bytes} bytes per file"
                    )
                    raise _Unreadable
                if total + size > limits.max_total_bytes:
                    problems.append(
                        f"package is larger than the limit of {limits.max_total_bytes} bytes"
                    )
                    raise _Unreadable
                data = read_file_bounded(full, limits.max_entry_bytes, rel)
                total += len(data)
                if total > limits.max_total_bytes:  # it grew since the stat
                    problems.append(
                        f"package is larger than the limit of {limits.max_total_bytes} bytes"
                    )
                    raise _Unreadable
                files[rel] = data
            except ArchiveError as exc:  # it grew past the limit since the stat
                problems.append(str(exc))
                raise _Unreadable from None
            except EntryError as exc:
                problems.append(f"{exc} (skipped)")
            except OSError as exc:
                problems.append(f"{rel}: cannot read: {exc.strerror or exc}")
    return files


def _keep_dir(here: Path, rel_dir: Path, name: str, problems: list[str]) -> bool:
    if name in IGNORED_DIRS:
        return False
    if (here / name).is_symlink():
        rel = (rel_dir / name).as_posix()
        problems.append(f"{rel}: symlinks are not allowed in a package (skipped)")
        return False
    return True


def _walk(
    root: Path, problems: list[str], limits: ArchiveLimits
) -> Iterator[tuple[Path, Path, list[str], list[str]]]:
    """Like ``os.walk`` (top down, sorted, symlinks not followed), but it stops with a problem
    once more than ``limits.max_entries`` entries were listed, without listing the rest."""
    seen = 0
    pending = [Path(".")]
    while pending:
        rel_dir = pending.pop()
        here = root / rel_dir
        dirs: list[str] = []
        names: list[str] = []
        try:
            with os.scandir(here) as listing:
                for entry in listing:
                    seen += 1
                    if seen > limits.max_entries:
                        problems.append(
                            f"package folder has more than the limit of {limits.max_entries} "
                            "entries"
                        )
                        raise _Unreadable
                    (dirs if entry.is_dir() else names).append(entry.name)
        except OSError as exc:
            problems.append(f"cannot read folder {here}: {exc.strerror or exc}")
            continue
        dirs.sort()
        names.sort()
        yield rel_dir, here, dirs, names
        pending.extend(rel_dir / d for d in reversed(dirs))


def _read_zip(data: bytes, problems: list[str], limits: ArchiveLimits) -> dict[str, bytes]:
    try:
        zf = BoundedZip(data, limits)
    except ArchiveError as exc:
        problems.append(str(exc))
        raise _Unreadable from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        problems.append(f"not a valid zip file: {exc}")
        raise _Unreadable from None
    entries: list[tuple[str, zipfile.ZipInfo]] = []
    with zf:
        for info in zf.infolist():
            name = info.filename.replace("\\", "/")
            if is_ignored(name):
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                problems.append(f"zip entry {info.filename!r} is a symlink, which is not allowed")
                continue
            if _unsafe_path(name):
                problems.append(
                    f"zip entry {info.filename!r} has an absolute path or '..' that escapes "
                    "the package"
                )
                continue
            if info.is_dir():
                continue
            entries.append((_clean_path(name), info))
        files: dict[str, bytes] = {}
        try:
            zf.check_claims([info for _, info in entries])
            for name, info in entries:
                if name in files:
                    problems.append(f"zip entry {name!r} appears more than once")
                    continue
                try:
                    files[name] = zf.read(info)
                except EntryError as exc:
                    problems.append(str(exc))
        except ArchiveError as exc:
            problems.append(str(exc))
            raise _Unreadable from None
    return _strip_top_folder(files)


def _unsafe_path(path: str) -> bool:
    path = path.replace("\\", "/")
    if path.startswith("/") or _DRIVE_RE.match(path):
        return True
    return ".." in path.split("/")


def _clean_path(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
    return "/".join(parts)


def _strip_top_folder(files: dict[str, bytes]) -> dict[str, bytes]:
    """``pkg/manifest.json, pkg/main.py`` -> ``manifest.json, main.py`` (one top folder only)."""
    if not files or MANIFEST_FILE in files:
        return files
    tops = {path.split("/", 1)[0] for path in files}
    if len(tops) != 1 or any("/" not in path for path in files):
        return files
    cut = len(tops.pop()) + 1
    return {path[cut:]: data for path, data in files.items()}


# --- validating ------------------------------------------------------------------------------


def _build(files: dict[str, bytes], source: str, problems: list[str]) -> ServicePackage:
    manifest = _check_manifest(files, problems)
    requirements = _check_requirements(files, problems)
    config = _check_object_file(files, CONFIG_FILE, problems)
    secrets = _check_object_file(files, SECRETS_FILE, problems)
    parameters = _check_parameters(files, problems)
    readme = None
    if README_FILE in files:
        readme = files[README_FILE].decode("utf-8", errors="replace")
    if problems or manifest is None:
        raise PackageError(problems or [f"{MANIFEST_FILE} is invalid"], source)
    return ServicePackage(
        manifest=manifest,
        files=dict(sorted(files.items())),
        content_hash=compute_content_hash(files),
        requirements=requirements,
        config=config,
        secrets=secrets,
        parameters=parameters,
        readme=readme,
    )


def _check_manifest(files: dict[str, bytes], problems: list[str]) -> Manifest | None:
    if MANIFEST_FILE not in files:
        problems.append(f"{MANIFEST_FILE} is missing")
        return None
    raw = _load_json(files, MANIFEST_FILE, problems)
    if raw is _INVALID:
        return None
    if not isinstance(raw, dict):
        problems.append(f"{MANIFEST_FILE}: must be a JSON object, got {_json_kind(raw)}")
        return None
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems.extend(format_validation_error(exc, MANIFEST_FILE))
        # a list with a bad item is not checked for clashes by the model: do it here
        order = raw.get("execution_order")
        clash = execution_order_clash(order) if isinstance(order, list) else None
        clash_problem = f"{MANIFEST_FILE}: execution_order: {clash}"
        if clash and clash_problem not in problems:
            problems.append(clash_problem)
    # check named scripts even when other manifest fields are wrong, to list every problem
    for where, script in _named_scripts(raw):
        if script not in files:
            problems.append(f"script {script!r} named in {where} does not exist")
    return manifest


def _named_scripts(raw: dict[str, Any]) -> list[tuple[str, str]]:
    named: list[tuple[str, str]] = []
    entrypoint = raw.get("entrypoint")
    if isinstance(entrypoint, str) and script_path_problem(entrypoint) is None:
        named.append(("entrypoint", normalize_script_path(entrypoint)))
    order = raw.get("execution_order")
    if isinstance(order, list):
        for step in order:
            if isinstance(step, str) and script_path_problem(step) is None:
                item = ("execution_order", normalize_script_path(step))
                if item not in named:
                    named.append(item)
    return named


def _check_requirements(files: dict[str, bytes], problems: list[str]) -> list[str]:
    if REQUIREMENTS_FILE not in files:
        return []
    text = _decode(files, REQUIREMENTS_FILE, problems)
    if text is None:
        return []
    requirements, found = parse_requirements(text)
    problems.extend(found)
    return requirements


def _check_object_file(files: dict[str, bytes], name: str, problems: list[str]) -> dict[str, Any]:
    if name not in files:
        return {}
    raw = _load_json(files, name, problems)
    if raw is _INVALID:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{name}: must be a JSON object, got {_json_kind(raw)}")
        return {}
    return raw


def _check_parameters(files: dict[str, bytes], problems: list[str]) -> list[Parameter]:
    if PARAMETERS_FILE not in files:
        return []
    raw = _load_json(files, PARAMETERS_FILE, problems)
    if raw is _INVALID:
        return []
    try:
        return parse_parameter_fields(raw, PARAMETERS_FILE)
    except ParameterError as exc:
        problems.extend(exc.problems)
        return []


def _decode(files: dict[str, bytes], name: str, problems: list[str]) -> str | None:
    try:
        return files[name].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.append(f"{name}: not valid UTF-8 text (byte {exc.start})")
        return None


def _load_json(files: dict[str, bytes], name: str, problems: list[str]) -> Any:
    text = _decode(files, name, problems)
    if text is None:
        return _INVALID
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    except (ValueError, RecursionError) as exc:
        problems.append(f"{name}: invalid JSON: {exc}")
    return _INVALID


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


def _lower(text: str) -> str:
    if text[:1].isupper() and not text[1:2].isupper():
        return text[0].lower() + text[1:]
    return text
