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
    '{"opennebula_version": "7.0.2", "db_ver',  # truncated by a full disk or a crash
    "[1, 2, 3]",
    '"just a string"',
    '{"opennebula_version": "7.0.2", "recorded_at": "yesterday"}',
    '{"opennebula_version": "7.0.2", "recorded_at": null}',
    '{"opennebula_version": "7.0.2", "recorded_at": [1]}',
])
def test_an_unreadable_record_still_counts_as_a_record(tmp_path: Path, text: str) -> None:
    """Only an absent file means "no completed start": a damaged one says the volume ran one."""
    path = tmp_path / "last-start.json"
    path.write_text(text)
    record = read_start_record(path)
    assert record is not None
    assert record.unreadable is not None and str(path) in record.unreadable


def test_undecodable_bytes_still_count(tmp_path: Path) -> None:
    path = tmp_path / "last-start.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    record = read_start_record(path)
    assert record is not None and record.unreadable is not None


def test_a_record_that_cannot_be_opened_still_counts(tmp_path: Path) -> None:
    path = tmp_path / "last-start.json"
    path.mkdir()  # EISDIR: any error but "does not exist"
    record = read_start_record(path)
    assert record is not None and record.unreadable is not None
