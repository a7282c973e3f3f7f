"""Tests for fxray.services.package: loading, validating, hashing and zipping packages."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest

import fxray.services.package as package_module
from fxray.packages.archive import ArchiveLimits
from fxray.services import PackageError, ServicePackage, load_package, load_package_bytes
from fxray.services.package import compute_content_hash, parse_requirements, requirements_hash

MANIFEST: dict[str, Any] = {
    "name": "orders-etl",
    "description": "Loads orders.",
    "tags": ["etl"],
    "execution_order": ["extract.py", "src/load.py"],
    "trigger_events": ["orders.*"],
    "schedule": "*/5 * * * *",
    "priority": 2,
    "retries": {"max": 2, "backoff_s": 0.5},
    "output_events": ["orders.loaded"],
}


def good_files(**overrides: Any) -> dict[str, bytes]:
    """The files of a valid package; ``overrides`` maps path -> content (None deletes)."""
    files: dict[str, Any] = {
        "manifest.json": MANIFEST,
        "extract.py": "print('extract')\n",
        "src/load.py": "print('load')\n",
        "requirements.txt": "# deps\nrequests>=2.31  # http\n\npandas==2.2.*\n",
        "config.json": {"table": "orders"},
        "secrets.json": {"token": "s3cret"},
        "parameters.json": {"fields": [{"name": "limit", "type": "int", "default": 10}]},
        "README.md": "# Orders\n",
    }
    files.update({k.replace("__", "/"): v for k, v in overrides.items()})
    out: dict[str, bytes] = {}
    for path, value in files.items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            value = json.dumps(value, indent=2)
        out[path] = value.encode() if isinstance(value, str) else value
    return out


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def make_zip(
    files: dict[str, bytes],
    prefix: str = "",
    order: list[str] | None = None,
    date_time: tuple[int, int, int, int, int, int] = (2024, 5, 6, 7, 8, 10),
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in order or list(files):
            zf.writestr(zipfile.ZipInfo(prefix + path, date_time=date_time), files[path])
    return buf.getvalue()


def problems_of(files: dict[str, bytes]) -> list[str]:
    with pytest.raises(PackageError) as info:
        load_package_bytes(make_zip(files))
    return info.value.problems


def manifest_with(**changes: Any) -> dict[str, Any]:
    data = dict(MANIFEST)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


# --- good packages ----------------------------------------------------------------------------


def test_good_folder(tmp_path: Path) -> None:
    pkg = load_package(write_folder(tmp_path / "pkg", good_files()))
    assert isinstance(pkg, ServicePackage)
    assert pkg.name == "orders-etl"
    assert pkg.steps == ["extract.py", "src/load.py"]
    assert pkg.manifest.retries.max == 2
    assert pkg.requirements == ["requests>=2.31", "pandas==2.2.*"]
    assert pkg.config == {"table": "orders"}
    assert pkg.secrets == {"token": "s3cret"}
    assert [p.name for p in pkg.parameters] == ["limit"]
    assert pkg.readme == "# Orders\n"
    assert set(pkg.files) == set(good_files())
    assert pkg.files["extract.py"] == b"print('extract')\n"
    assert len(pkg.content_hash) == 64
    assert pkg.short_hash == pkg.content_hash[:12]
    assert len(pkg.requirements_hash) == 64
    assert "s3cret" not in repr(pkg)


def test_minimal_package(tmp_path: Path) -> None:
    files = {"manifest.json": b'{"name": "mini", "entrypoint": "main.py"}', "main.py": b""}
    pkg = load_package(write_folder(tmp_path, files))
    assert pkg.steps == ["main.py"]
    assert pkg.requirements == []
    assert pkg.requirements_hash == ""
    assert pkg.config == {}
    assert pkg.secrets == {}
    assert pkg.parameters == []
    assert pkg.readme is None


def test_parameters_json_as_a_list(tmp_path: Path) -> None:
    files = good_files(**{"parameters.json": [{"name": "limit", "type": "int"}]})
    assert load_package(write_folder(tmp_path, files)).parameters[0].type == "int"


def test_folder_zip_and_zip_with_top_folder_have_the_same_hash(tmp_path: Path) -> None:
    files = good_files()
    from_folder = load_package(write_folder(tmp_path / "pkg", files))
    zip_path = tmp_path / "pkg.zip"
    zip_path.write_bytes(make_zip(files))
    from_zip_file = load_package(zip_path)
    from_zip_str = load_package(str(zip_path))
    from_bytes = load_package_bytes(make_zip(files))
    from_top_folder = load_package_bytes(make_zip(files, prefix="orders-etl/"))
    hashes = {
        p.content_hash
        for p in (from_folder, from_zip_file, from_zip_str, from_bytes, from_top_folder)
    }
    assert len(hashes) == 1
    assert from_top_folder.files == from_folder.files
    assert from_folder == from_top_folder


def test_load_package_accepts_bytes() -> None:
    assert load_package(make_zip(good_files())).name == "orders-etl"


def test_junk_is_ignored(tmp_path: Path) -> None:
    clean = load_package(write_folder(tmp_path / "clean", good_files()))
    junk = {
        "__pycache__/extract.cpython-311.pyc": b"\x00junk",
        "src/__pycache__/load.cpython-311.pyc": b"\x00junk",
        "stray.pyc": b"\x00",
        ".git/config": b"[core]",
        ".DS_Store": b"\x00",
        "src/.DS_Store": b"\x00",
        ".venv/bin/python": b"\x7fELF",
    }
    dirty_folder = load_package(write_folder(tmp_path / "dirty", {**good_files(), **junk}))
    assert dirty_folder.content_hash == clean.content_hash
    assert set(dirty_folder.files) == set(clean.files)
    with_macos = {**good_files(), **junk, "__MACOSX/._extract.py": b"\x00"}
    assert load_package_bytes(make_zip(with_macos)).content_hash == clean.content_hash
    top = make_zip({**good_files(), **junk}, prefix="pkg/")
    assert load_package_bytes(top).content_hash == clean.content_hash


def test_junk_symlinks_in_venv_are_ignored(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pkg", good_files())
    (root / ".venv" / "bin").mkdir(parents=True)
    try:
        os.symlink("/usr/bin/python3", root / ".venv" / "bin" / "python")
    except (OSError, NotImplementedError):
        pytest.skip("symlinks not supported")
    assert load_package(root).name == "orders-etl"


def test_entrypoint_wins_over_execution_order() -> None:
    files = good_files(
        **{
            "manifest.json": manifest_with(entrypoint="main.py"),
            "main.py": "print('main')\n",
        }
    )
    pkg = load_package_bytes(make_zip(files))
    assert pkg.steps == ["main.py"]


# --- hashing and zipping ----------------------------------------------------------------------


def test_hash_is_independent_of_order_and_mtime(tmp_path: Path) -> None:
    files = good_files()
    forward = make_zip(files, order=sorted(files))
    backward = make_zip(files, order=sorted(files, reverse=True), date_time=(2001, 2, 3, 4, 5, 6))
    assert forward != backward
    assert load_package_bytes(forward).content_hash == load_package_bytes(backward).content_hash

    root = write_folder(tmp_path / "pkg", files)
    before = load_package(root).content_hash
    os.utime(root / "extract.py", (1_000_000, 1_000_000))
    assert load_package(root).content_hash == before
    assert before == load_package_bytes(forward).content_hash


def test_changing_one_byte_changes_the_hash() -> None:
    files = good_files()
    changed = good_files(**{"extract.py": "print('extracT')\n"})
    renamed = dict(files)
    renamed["other.txt"] = renamed.pop("README.md")
    a, b, c = (load_package_bytes(make_zip(f)).content_hash for f in (files, changed, renamed))
    assert len({a, b, c}) == 3


def test_content_hash_is_unambiguous() -> None:
    assert compute_content_hash({"ab": b"c"}) != compute_content_hash({"a": b"bc"})
    assert compute_content_hash({"a": b"1", "b": b"2"}) == compute_content_hash(
        {"b": b"2", "a": b"1"}
    )


def test_to_zip_round_trips() -> None:
    pkg = load_package_bytes(make_zip(good_files(), prefix="top/"))
    data = pkg.to_zip()
    assert data == pkg.to_zip()  # deterministic
    again = load_package_bytes(data)
    assert again.content_hash == pkg.content_hash
    assert again.files == pkg.files
    assert again.to_zip() == data
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert all(not n.startswith("top/") for n in names)
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_requirements_hash_is_normalised() -> None:
    a = requirements_hash(["Foo_Bar>=1", "requests"])
    assert a == requirements_hash(["requests", "foo-bar>=1"])
    assert a != requirements_hash(["requests", "foo-bar>=2"])
    assert requirements_hash([]) == ""


# --- requirements.txt -------------------------------------------------------------------------


def test_parse_requirements() -> None:
    text = "# comment\n\nrequests>=2  # trailing\nnumpy \\\n  ==1.26\npkg @ https://x/p.whl#sha256=ab\n"
    assert parse_requirements(text) == (
        ["requests>=2", "numpy   ==1.26", "pkg @ https://x/p.whl#sha256=ab"],
        [],
    )


@pytest.mark.parametrize(
    "line",
    [
        "-e .",
        "-r other.txt",
        "-c constraints.txt",
        "--index-url https://evil.example/simple",
        "--extra-index-url=https://evil.example/simple",
        "-f ./wheels",
        "--find-links ./wheels",
    ],
)
def test_option_lines_are_rejected(line: str) -> None:
    option = line.split()[0].split("=")[0]
    files = good_files(**{"requirements.txt": f"requests\n{line}\n"})
    assert problems_of(files) == [
        f"requirements.txt: line 2: option lines like {option!r} are not allowed; "
        "list plain requirements only"
    ]


@pytest.mark.parametrize("line", ["foo==", "./local/path", "https://x/y.whl", "foo bar"])
def test_invalid_requirement_lines(line: str) -> None:
    problems = problems_of(good_files(**{"requirements.txt": f"# c\n{line}\n"}))
    assert len(problems) == 1
    assert problems[0].startswith(f"requirements.txt: line 2: {line!r} is not a valid requirement")


# --- bad packages: one problem each -----------------------------------------------------------


def test_missing_manifest() -> None:
    assert problems_of(good_files(**{"manifest.json": None})) == ["manifest.json is missing"]


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackageError) as info:
        load_package(tmp_path / "empty")
    assert info.value.problems == ["manifest.json is missing"]
    assert info.value.source == str(tmp_path / "empty")


@pytest.mark.parametrize(
    "name", ["manifest.json", "config.json", "secrets.json", "parameters.json"]
)
def test_bad_json(name: str) -> None:
    files = good_files(**{name: '{\n  "a": 1,\n  oops\n}'})
    assert problems_of(files) == [
        f"{name}: invalid JSON at line 3, column 3: Expecting property name enclosed in double "
        "quotes"
    ]


def test_manifest_not_utf8() -> None:
    problems = problems_of(good_files(**{"manifest.json": b'{"name": "\xff"}'}))
    assert problems == ["manifest.json: not valid UTF-8 text (byte 10)"]


def test_manifest_with_bom_is_fine() -> None:
    files = good_files(**{"manifest.json": b"\xef\xbb\xbf" + json.dumps(MANIFEST).encode()})
    assert load_package_bytes(make_zip(files)).name == "orders-etl"


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("manifest.json", [1], "a list"),
        ("config.json", [1, 2], "a list"),
        ("secrets.json", '"token"', "a string"),
        ("config.json", "null", "null"),
        ("secrets.json", "3", "a number"),
    ],
)
def test_json_file_not_an_object(name: str, value: Any, kind: str) -> None:
    files = good_files(**{name: value if isinstance(value, str) else json.dumps(value)})
    assert problems_of(files) == [f"{name}: must be a JSON object, got {kind}"]


def test_unknown_manifest_field() -> None:
    files = good_files(**{"manifest.json": manifest_with(foo=1)})
    assert problems_of(files) == ["manifest.json: foo: unknown field"]


def test_invalid_name() -> None:
    problems = problems_of(good_files(**{"manifest.json": manifest_with(name="Orders ETL")}))
    assert len(problems) == 1
    assert problems[0].startswith("manifest.json: name: 'Orders ETL' is not a valid service name")


def test_missing_scripts() -> None:
    files = good_files(**{"src/load.py": None})
    assert problems_of(files) == ["script 'src/load.py' named in execution_order does not exist"]
    files = good_files(**{"manifest.json": manifest_with(entrypoint="main.py")})
    assert problems_of(files) == ["script 'main.py' named in entrypoint does not exist"]


def test_no_steps() -> None:
    files = good_files(**{"manifest.json": manifest_with(execution_order=None)})
    assert problems_of(files) == [
        "manifest.json: either entrypoint or execution_order must name a script"
    ]


def test_step_not_a_python_file() -> None:
    files = good_files(
        **{"manifest.json": manifest_with(execution_order=["extract.py", "run.sh"]), "run.sh": ""}
    )
    assert problems_of(files) == ["manifest.json: execution_order[1]: 'run.sh' is not a .py file"]


def test_step_escaping_the_folder() -> None:
    files = good_files(**{"manifest.json": manifest_with(entrypoint="../outside.py")})
    assert problems_of(files) == [
        "manifest.json: entrypoint: '../outside.py' must not escape the package folder"
    ]


def test_same_script_twice() -> None:
    order = ["extract.py", "src/load.py", "extract.py"]
    files = good_files(**{"manifest.json": manifest_with(execution_order=order)})
    assert problems_of(files) == [
        "manifest.json: execution_order: 'extract.py' named more than once (name clash)"
    ]


def test_invalid_cron() -> None:
    files = good_files(**{"manifest.json": manifest_with(schedule="x")})
    (problem,) = problems_of(files)
    assert problem.startswith("manifest.json: schedule: 'x' is not a valid cron expression")


def test_bad_parameters() -> None:
    fields = [
        {"name": "a", "type": "select"},
        {"name": "a", "type": "int"},
        {"name": "b", "type": "bool", "default": "perhaps"},
    ]
    problems = problems_of(good_files(**{"parameters.json": fields}))
    assert problems == [
        "parameters.json: fields[0] ('a'): choices are required for a select field",
        "parameters.json: fields[2] ('b'): default 'perhaps' is invalid: "
        "expected true/false (or yes/no, 1/0), got 'perhaps'",
    ]
    clash = [{"name": "a"}, {"name": "a", "type": "int"}]
    assert problems_of(good_files(**{"parameters.json": clash})) == [
        "parameters.json: two fields are named 'a' (name clash)"
    ]
    assert problems_of(good_files(**{"parameters.json": '"x"'})) == [
        "parameters.json: must be a list of fields or an object {'fields': [...]}"
    ]


# --- several problems at once -----------------------------------------------------------------


def test_several_problems_are_all_listed(tmp_path: Path) -> None:
    manifest = manifest_with(
        name="Bad Name",
        schedule="every day",
        priority=0,
        surprise=True,
        execution_order=["extract.py", "missing.py", "notes.txt", "./extract.py"],
    )
    files = good_files(
        **{
            "manifest.json": manifest,
            "requirements.txt": "--index-url https://x\nfoo==\n",
            "config.json": "[1]",
            "secrets.json": "{bad",
            "parameters.json": [{"name": "p", "type": "select"}],
        }
    )
    with pytest.raises(PackageError) as info:
        load_package(write_folder(tmp_path / "pkg", files))
    problems = info.value.problems
    expected_starts = [
        "manifest.json: name: 'Bad Name' is not a valid service name",
        "manifest.json: execution_order[2]: 'notes.txt' is not a .py file",
        "manifest.json: schedule: 'every day' is not a valid cron expression",
        "manifest.json: priority: input should be greater than or equal to 1",
        "manifest.json: surprise: unknown field",
        "manifest.json: execution_order: 'extract.py' named more than once (name clash)",
        "script 'missing.py' named in execution_order does not exist",
        "requirements.txt: line 1: option lines like '--index-url' are not allowed",
        "requirements.txt: line 2: 'foo==' is not a valid requirement",
        "config.json: must be a JSON object, got a list",
        "secrets.json: invalid JSON at line 1, column 2",
        "parameters.json: fields[0] ('p'): choices are required for a select field",
    ]
    assert len(problems) == len(expected_starts), problems
    for start in expected_starts:
        assert any(p.startswith(start) for p in problems), start
    message = str(info.value)
    assert message.startswith(f"service package {tmp_path / 'pkg'} is invalid:\n  - ")
    assert message.count("\n  - ") == len(expected_starts)


def test_package_error_message() -> None:
    err = PackageError(["problem 1", "problem 2"], "svc.zip")
    assert str(err) == "service package svc.zip is invalid:\n  - problem 1\n  - problem 2"
    assert err.problems == ["problem 1", "problem 2"]
    assert err.source == "svc.zip"
    assert isinstance(err, ValueError)


def test_upload_source_name() -> None:
    with pytest.raises(PackageError) as info:
        load_package_bytes(make_zip({"x.py": b""}))
    assert info.value.source == "upload"
    assert str(info.value).startswith("service package upload is invalid:")


# --- zip and folder safety --------------------------------------------------------------------


@pytest.mark.parametrize("evil", ["../evil.py", "src/../../evil.py", "/etc/evil.py", "C:/evil.py"])
def test_zip_slip(evil: str) -> None:
    files = {**good_files(), evil: b"boom"}
    problems = problems_of(files)
    assert problems == [f"zip entry {evil!r} has an absolute path or '..' that escapes the package"]


def test_symlink_in_zip() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in good_files().items():
            zf.writestr(path, data)
        link = zipfile.ZipInfo("link.py")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(PackageError) as info:
        load_package_bytes(buf.getvalue())
    assert info.value.problems == ["zip entry 'link.py' is a symlink, which is not allowed"]


def test_symlink_in_folder(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pkg", good_files())
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("x")
    try:
        os.symlink(tmp_path / "outside" / "secret.txt", root / "link.txt")
        os.symlink(tmp_path / "outside", root / "linkdir")
    except (OSError, NotImplementedError):
        pytest.skip("symlinks not supported")
    with pytest.raises(PackageError) as info:
        load_package(root)
    assert info.value.problems == [
        "linkdir: symlinks are not allowed in a package (skipped)",
        "link.txt: symlinks are not allowed in a package (skipped)",
    ]


def test_too_many_files_in_zip() -> None:
    files = good_files()
    files.update({f"data/{i}.txt": b"" for i in range(ArchiveLimits().max_files)})
    problems = problems_of(files)
    count = len(files)
    assert problems == [f"zip has {count} files, more than the limit of 1000"]


def test_too_many_files_in_folder(tmp_path: Path) -> None:
    files = good_files()
    assert len(files) > 5
    with pytest.raises(PackageError) as info:
        load_package(write_folder(tmp_path / "pkg", files), ArchiveLimits(max_files=5))
    assert info.value.problems == ["package has more than the limit of 5 files"]


def test_too_large(tmp_path: Path) -> None:
    limits = ArchiveLimits(max_total_bytes=100)
    files = good_files(**{"big.bin": b"x" * 200})
    with pytest.raises(PackageError) as info:
        load_package_bytes(make_zip(files), limits=limits)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("zip unpacks to ")
    assert info.value.problems[0].endswith("more than the limit of 100")
    with pytest.raises(PackageError) as info:
        load_package(write_folder(tmp_path / "pkg", files), limits)
    assert info.value.problems == ["package is larger than the limit of 100 bytes"]


def test_not_a_zip(tmp_path: Path) -> None:
    with pytest.raises(PackageError) as info:
        load_package_bytes(b"definitely not a zip")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("not a valid zip file")
    bogus = tmp_path / "svc.zip"
    bogus.write_text("nope")
    with pytest.raises(PackageError) as info:
        load_package(bogus)
    assert info.value.problems[0].startswith("not a valid zip file")
    assert info.value.source == str(bogus)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(PackageError) as info:
        load_package(tmp_path / "nope")
    assert info.value.problems == ["no such folder or file"]


def test_duplicate_zip_entries() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in good_files().items():
            zf.writestr(path, data)
        with pytest.warns(UserWarning):
            zf.writestr("extract.py", b"print('other')\n")
    with pytest.raises(PackageError) as info:
        load_package_bytes(buf.getvalue())
    assert info.value.problems == ["zip entry 'extract.py' appears more than once"]


def test_package_from_files() -> None:
    pkg = package_module.package_from_files({**good_files(), "__pycache__/x.pyc": b"\x00"})
    assert pkg.content_hash == load_package_bytes(make_zip(good_files())).content_hash
    with pytest.raises(PackageError) as info:
        package_module.package_from_files({**good_files(), "../x.py": b""}, source="api")
    assert info.value.problems == ["'../x.py': absolute path or '..' escapes the package (skipped)"]
    assert info.value.source == "api"
