"""The catalogue: one row per program, import-free, and consistent with what reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from onerun.catalogue import (
    ONERUN_PROGRAMS,
    SERVICE,
    SERVICE_AUTH_FILES,
    SERVICE_NAMES,
    SERVICES,
)
from onerun.runtime.services import service_auth_files_for
from onerun.versions import Version

PROJECT = Path(__file__).resolve().parents[2]


def test_importing_the_catalogue_loads_no_other_module() -> None:
    """The probe reaches it on every run: it must cost the probe nothing but itself."""
    code = ("import sys\nbefore = set(sys.modules)\nimport onerun.catalogue\n"
            "print(sorted(set(sys.modules) - before))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PROJECT, timeout=10, check=True)
    assert done.stdout.strip() == "['onerun', 'onerun.catalogue']"


def test_every_program_has_one_row_with_its_own_priority() -> None:
    names = [spec.name for spec in (*SERVICES, *ONERUN_PROGRAMS)]
    assert len(names) == len(set(names))
    priorities = [spec.priority for spec in (*SERVICES, *ONERUN_PROGRAMS)]
    assert len(priorities) == len(set(priorities))  # start and stop order is never a tie
    assert all(spec.installed_by is not None for spec in SERVICES)
    assert all(spec.installed_by is None and not spec.argv for spec in ONERUN_PROGRAMS)


def test_every_auth_file_is_one_services_and_oned_writes_each() -> None:
    owned = [spec.auth_file for spec in SERVICES if spec.auth_file is not None]
    assert sorted(owned) == sorted(SERVICE_AUTH_FILES)
    assert all(SERVICE[name].waits_for_oned for name in SERVICE_NAMES
               if SERVICE[name].auth_file is not None)


@pytest.mark.parametrize(("release", "count"), [("7.0.2", 3), ("7.2.0", 4), ("7.4.0", 5)])
def test_service_auth_files_come_in_the_order_oned_writes_them(release: str, count: int) -> None:
    """A leftover-removal plan lists them in this order; it must not move between starts."""
    assert service_auth_files_for(Version.parse(release), ()) == SERVICE_AUTH_FILES[:count]


def test_a_row_is_frozen() -> None:
    with pytest.raises(AttributeError, match="frozen"):
        SERVICE["oned"].stopwait = 1
    assert SERVICE["oned"].stopwait == 30
