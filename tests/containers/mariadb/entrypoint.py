"""Entrypoint of the tier's MariaDB image (the chart's MariaDB contract, Debian's server).

Environment, as the chart gives the official image: MARIADB_DATABASE, MARIADB_USER,
MARIADB_PASSWORD_FILE, MARIADB_ROOT_PASSWORD_FILE; MARIADB_PORT (default 3306). On an empty
data directory it initialises it and creates the database and the user, over the socket
only, with the passwords on stdin; then it execs mariadbd on 127.0.0.1 (the tier keeps every
container on loopback) with --transaction-isolation=READ-COMMITTED.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

DATADIR = Path("/var/lib/mysql")
SOCKET = "/run/mysqld/mysqld.sock"


def secret(name: str) -> str:
    return Path(os.environ[f"{name}_FILE"]).read_text().strip()


def literal(text: str) -> str:
    """An SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def identifier(text: str) -> str:
    return "`" + text.replace("`", "``") + "`"


def server_argv(*extra: str) -> list[str]:
    return ["mariadbd", "--no-defaults", f"--datadir={DATADIR}", f"--socket={SOCKET}",
            "--user=mysql", "--transaction-isolation=READ-COMMITTED",
            "--character-set-server=utf8mb4", *extra]


def initialise() -> None:
    database, user = os.environ["MARIADB_DATABASE"], os.environ["MARIADB_USER"]
    password, root_password = secret("MARIADB_PASSWORD"), secret("MARIADB_ROOT_PASSWORD")
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={DATADIR}", "--user=mysql",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, stdout=subprocess.DEVNULL)
    server = subprocess.Popen(server_argv("--skip-networking"))
    client = ["mariadb", "--no-defaults", f"--socket={SOCKET}", "-uroot"]
    for _ in range(300):
        probe = subprocess.run([*client, "-e", "SELECT 1"], capture_output=True, check=False)
        if probe.returncode == 0:
            break
        time.sleep(0.1)
    # Anonymous accounts would match a local login before the user's '%' account.
    # Every name and password is quoted by identifier() and literal().
    sql = ("DELETE FROM mysql.global_priv WHERE User = '';\n"  # noqa: S608
           f"CREATE DATABASE IF NOT EXISTS {identifier(database)};\n"
           f"CREATE USER {literal(user)}@'%' IDENTIFIED BY {literal(password)};\n"
           f"GRANT ALL ON {identifier(database)}.* TO {literal(user)}@'%';\n"
           f"ALTER USER 'root'@'localhost' IDENTIFIED BY {literal(root_password)};\n"
           "FLUSH PRIVILEGES;\n")
    subprocess.run(client, input=sql.encode(), check=True)
    server.terminate()
    server.wait(timeout=60)


def main() -> None:
    if not (DATADIR / "mysql").is_dir():
        initialise()
    port = os.environ.get("MARIADB_PORT", "3306")
    argv = server_argv("--bind-address=127.0.0.1", f"--port={port}")
    os.execvp(argv[0], argv)  # noqa: S606 (the server replaces this process, as PID 1)


if __name__ == "__main__":
    sys.exit(main())
