"""Paths and helpers the tests share (imported as `testlib`; `conftest` is ambiguous
because several test folders have one)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parent.parent
SHARED = PROJECT.parent / "shared"
UPSTREAM = SHARED / "fixtures" / "opennebula"
DB_FIXTURES = SHARED / "fixtures" / "opennebula-db" / "7.0.0"
UPSTREAM_VERSIONS = ("7.0.0", "7.4.0")


def require_shared(path: Path) -> Path:
    """Skip the calling test with a reason when a ../shared fixture is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared fixtures are not available here)")
    return path


def lay_out_etc_dist(root: Path, version: str) -> Path:
    """Copy upstream configs of ``version`` to root/usr/share/one/etc-dist, as the image does."""
    source = require_shared(UPSTREAM / version / "etc")
    target = root / "usr/share/one/etc-dist"
    shutil.copytree(source, target, dirs_exist_ok=True)
    schedulers = target / "schedulers"
    schedulers.mkdir(exist_ok=True)
    for name in ("rank.conf", "one_drs.conf"):
        if (target / name).exists():
            shutil.move(target / name, schedulers / name)
    return target


def write_image_versions(root: Path, release: str, db_version: str) -> None:
    """Stand-ins for the Ruby files the image's OpenNebula versions are read from, laid out
    as each release ships them: up to 7.0.x ``VERSION`` is in opennebula.rb; from 7.2.0 on
    it is in opennebula/version.rb, which opennebula.rb only requires
    (src/oca/ruby/opennebula.rb@release-7.2.0)."""
    ruby = root / "usr/lib/one/ruby"
    (ruby / "onedb").mkdir(parents=True, exist_ok=True)
    constant = f"module OpenNebula\n    VERSION = '{release}'\nend\n"
    if tuple(int(part) for part in release.split(".")[:2]) >= (7, 2):
        (ruby / "opennebula").mkdir(exist_ok=True)
        (ruby / "opennebula/version.rb").write_text(constant)
        (ruby / "opennebula.rb").write_text(
            "require 'opennebula/version'\n\nmodule OpenNebula\nend\n")
    else:
        (ruby / "opennebula.rb").write_text(constant)
    (ruby / "onedb/database_schema.rb").write_text(
        "class OneDBBacKEnd\nend\n"
        f"LATEST_DB_VERSION = '{db_version}'\nLATEST_LOCAL_DB_VERSION = '{db_version}'\n"
    )


BUILD = SHARED / "opennebula-build"
RELEASE_FILES = ("usr/lib/one/ruby/opennebula.rb", "usr/lib/one/ruby/opennebula/version.rb")


def extract_release_files(release: str, root: Path) -> list[str]:
    """Copy the Ruby files that may hold ``VERSION`` out of the real tree of ``release``
    (../shared/opennebula-build) into ``root``; returns the ones that release ships."""
    tree = require_shared(BUILD / f"opennebula-{release}-debian12-amd64.tar.zst")
    members = set(subprocess.run(["tar", "--zstd", "-tf", str(tree)], capture_output=True,
                                 text=True, check=True).stdout.split())
    shipped = [name for name in RELEASE_FILES if f"./{name}" in members]
    subprocess.run(["tar", "--zstd", "-xf", str(tree), "-C", str(root),
                    *(f"./{name}" for name in shipped)], check=True)
    return shipped


def grant_traverse(paths: list[Path]) -> list[tuple[Path, int]]:
    """Add o+x to every ancestor directory of ``paths`` that lacks it; return what changed.

    Programs the tests run as oneadmin need to reach this checkout, the interpreter and the
    test root (pytest's temp dirs are 0700). Only traversal is granted, not listing.
    """
    changed: list[tuple[Path, int]] = []
    for path in paths:
        for directory in reversed(path.resolve().parents):
            mode = directory.stat().st_mode & 0o7777
            if not mode & 0o001 and (directory, mode) not in changed:
                directory.chmod(mode | 0o001)
                changed.append((directory, mode))
    return changed


def restore_modes(changed: list[tuple[Path, int]]) -> None:
    for directory, mode in reversed(changed):
        if directory.exists():
            directory.chmod(mode)


# A stand-in for OpenNebula's onedb (tests only): configured by onedb-standin.json beside it.
ONEDB_STAND_IN = '''#!/usr/bin/python3
"""STAND-IN for OpenNebula's onedb, used by onerun's tests only (never shipped).

Records argv, environment, uid and pid, then acts as onedb-standin.json says.
"""
import json, os, pathlib, sys, time

conf = json.loads(pathlib.Path(__file__).with_name("onedb-standin.json").read_text())
with open(conf["record"], "a") as record:
    record.write(json.dumps({"argv": sys.argv, "env": dict(os.environ), "uid": os.getuid(),
                             "pid": os.getpid(), "marker": os.path.exists(conf["marker"])})
                 + "\\n")
args = sys.argv[1:]


def option(flag):
    return args[args.index(flag) + 1] if flag in args else None


if option("-s"):
    import sqlite3
    db = sqlite3.connect(option("-s"), isolation_level=None)
    def execute(sql, *params):
        return db.execute(sql.replace("%s", "?"), params).fetchall()
else:
    sys.path.insert(0, conf["pymysql_path"])
    import pymysql
    db = pymysql.connect(host=option("-S"), port=int(option("-P")), user=option("-u"),
                         password=os.environ["ONE_DB_PASSWORD"], database=option("-d"),
                         autocommit=True)
    def execute(sql, *params):
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

mode, target = conf["mode"], conf["target"]
print("stand-in onedb: upgrading to", target, flush=True)
if mode == "slow":  # half-migrates, then one long step (conf["sleep"] s), then finishes
    execute("CREATE TABLE group_vlans (oid INTEGER PRIMARY KEY)")
    execute("DELETE FROM user_pool WHERE oid = 1")
    print("stand-in onedb: a long migration step", flush=True)
    time.sleep(conf["sleep"])
    mode = "succeed"
if mode == "succeed":
    for table in ("db_versioning", "local_db_versioning"):
        oid = execute(f"SELECT MAX(oid) FROM {table}")[0][0] + 1
        extra = ", is_slave" if table == "local_db_versioning" else ""
        execute(f"INSERT INTO {table} (oid, version, timestamp, comment{extra}) VALUES"
                f" (%s, %s, 0, 'stand-in migration'{', 0' if extra else ''})", oid, target)
    sys.exit(0)
if mode == "noop":
    sys.exit(0)
execute("CREATE TABLE group_vlans (oid INTEGER PRIMARY KEY)")
execute("DELETE FROM user_pool WHERE oid = 1")
if mode == "damage-backup":
    newest = sorted(p for p in pathlib.Path(conf["backups"]).iterdir()
                    if not p.name.startswith("."))[-1]
    newest.write_bytes(b"damaged by the stand-in")
secret = os.environ.get("ONE_DB_PASSWORD") or open(os.environ["ONE_AUTH"]).read().split(":")[1]
for n in range(30):
    print(f"stand-in onedb: migrator step {n}", flush=True)
print(f"Unknown error running 'mysqldump -u oneadmin -p{secret.strip()}'", file=sys.stderr)
sys.exit(1)
'''


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc (children are found by ppid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found



def stop_process_tree(process: subprocess.Popen[Any], timeout: float = 60) -> Any:
    """Stop a started `onerun start`/supervisord as Kubernetes does (SIGTERM: supervisord
    stops its programs in order); if it does not end in time, SIGKILL it and everything
    below it. supervisord puts each program in its own process group, so killing the
    group of the process alone would leave stand-ins running after a failed test.
    Returns what the process wrote to a stdout pipe (drained meanwhile), else None."""
    family = descendants(process.pid) if process.poll() is None else []
    process.terminate()
    try:
        return process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        pass
    for pid in reversed(family + descendants(process.pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return process.communicate()[0]


# A writer that dies inside a transaction, as oned does when the pod is SIGKILLed mid-write.
# cache_size=1 makes sqlite spill changed pages into one.db before the commit, so the file
# on disk holds uncommitted data that only the hot journal can undo.
_CRASHING_WRITER = '''
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=DELETE")
db.execute("PRAGMA cache_size=1")
db.execute("BEGIN")
db.execute("UPDATE user_pool SET body='<USER><ID>0</ID><NAME>uncommitted</NAME></USER>'"
           " WHERE oid=0")
db.execute("DELETE FROM db_versioning")
db.execute("CREATE TABLE uncommitted (x)")
db.execute("INSERT INTO uncommitted VALUES (randomblob(300000))")
print("inside the transaction", flush=True)
time.sleep(600)
'''


def crash_inside_transaction(db: Path) -> bytes:
    """SIGKILL a process in the middle of a write transaction on ``db``; return the bytes of
    the hot ``-journal`` it leaves (sqlite's journal magic first)."""
    import sys

    writer = subprocess.Popen([sys.executable, "-c", _CRASHING_WRITER, str(db)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "inside the transaction"
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    journal = db.with_name(db.name + "-journal").read_bytes()
    assert journal[:8] == bytes.fromhex("d9d505f920a163d7"), "no hot journal was left"
    return journal


# What oned stores when attributes it encrypts are set (the values stand in for ciphertexts;
# tests that decrypt make real ones): user 0's SSH key beside onerun's key fingerprint, a
# datastore's restic password, a running VM's context password and a DONE VM's.
ENCRYPTED_FIXTURE_STATEMENTS = (
    "UPDATE user_pool SET body = REPLACE(body, '<TEMPLATE>', '<TEMPLATE>"
    "<ONERUN_ONE_KEY_FINGERPRINT><![CDATA[{fingerprint}]]></ONERUN_ONE_KEY_FINGERPRINT>"
    "<SSH_PRIVATE_KEY><![CDATA[{user}]]></SSH_PRIVATE_KEY>') WHERE oid = 0",
    "UPDATE datastore_pool SET body = REPLACE(body, '<TEMPLATE>', '<TEMPLATE>"
    "<RESTIC_PASSWORD><![CDATA[{datastore}]]></RESTIC_PASSWORD>') WHERE oid = 1",
    "INSERT INTO vm_pool (oid, name, body, uid, gid, state, lcm_state) VALUES (0, 'running',"
    " '<VM><ID>0</ID><TEMPLATE><CONTEXT><PASSWORD><![CDATA[{vm}]]></PASSWORD></CONTEXT>"
    "</TEMPLATE><USER_TEMPLATE/></VM>', 0, 0, 3, 3)",
    "INSERT INTO vm_pool (oid, name, body, uid, gid, state, lcm_state) VALUES (1, 'done',"
    " '<VM><ID>1</ID><TEMPLATE><CONTEXT><PASSWORD><![CDATA[{done}]]></PASSWORD></CONTEXT>"
    "</TEMPLATE><USER_TEMPLATE/></VM>', 0, 0, 6, 0)",
)
ENCRYPTED_FIXTURE_VALUES = {"fingerprint": "ab" * 32, "user": "dXNlcg==", "datastore": "ZHM=",
                            "vm": "dm0=", "done": "ZG9uZQ=="}


def load_chartlib() -> ModuleType:
    """tests/chart/chartlib.py by path (tests/ directories are not packages)."""
    if "chartlib" in sys.modules:
        return sys.modules["chartlib"]
    path = Path(__file__).resolve().parent / "chart" / "chartlib.py"
    spec = importlib.util.spec_from_file_location("chartlib", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chartlib"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
