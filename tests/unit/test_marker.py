"""The volume's start record: written by one start, read back by the next."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from onerun.marker import read_start_record, write_start_record


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "var/lib/one/.onerun/last-start.json"
    before = time.time()
    write_start_record(path, "7.0.2", "7.0.0", os.getuid(), os.getgid())
    record = read_start_record(path)
    assert record is not None
    assert record.opennebula_version == "7.0.2"
    assert record.db_version == "7.0.0"
    assert before <= record.recorded_at <= time.time()
    assert path.stat().st_mode & 0o7777 == 0o644


def test_unknown_versions_round_trip_as_none(tmp_path: Path) -> None:
    path = tmp_path / "last-start.json"
    write_start_record(path, None, None, os.getuid(), os.getgid())
    record = read_start_record(path)
    assert record is not None
    assert (record.opennebula_version, record.db_version) == (None, None)


def test_missing_record_is_none(tmp_path: Path) -> None:
    assert read_start_record(tmp_path / "absent.json") is None


@pytest.mark.parametrize("text", [
    "not json at all",
    "",
    "[1, 2, 3]",
    '"just a string"',
    '{"opennebula_version": "7.0.2", "recorded_at": "yesterday"}',
    '{"opennebula_version": "7.0.2", "recorded_at": null}',
    '{"opennebula_version": "7.0.2", "recorded_at": [1]}',
])
def test_garbage_record_is_none(tmp_path: Path, text: str) -> None:
    path = tmp_path / "last-start.json"
    path.write_text(text)
    assert read_start_record(path) is None


def test_undecodable_bytes_are_none(tmp_path: Path) -> None:
    path = tmp_path / "last-start.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert read_start_record(path) is None
