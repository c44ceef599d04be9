"""The settings table: every environment variable onerun reads, one declaration each.

The order is the order of reading (and of the problems reported). docs/settings.md's
table is generated from this one (``python -m onerun.settings.doc``).
"""

from __future__ import annotations

from onerun.catalogue import SERVICE_NAMES
from onerun.settings.declaration import NO_DEFAULT, Declaration
from onerun.settings.model import HA_BROADCAST_TIMEOUT_MS, HA_ELECTION_TIMEOUT_MS, HA_WAIT_TIMEOUT
from onerun.settings.overrides import config_file
from onerun.settings.rules import (
    DB_USER,
    UNQUOTED_IDENTIFIER,
    boolean,
    choice,
    db_host,
    directory,
    ha_members,
    host_or_auto,
    integer,
    ip_address,
    number,
    one_key,
    password,
    pattern,
    service_list,
    text,
)

_ZONE = "ONERUN_HA_MEMBERS"  # the HA variables are read only when it names a zone
_LABEL = "ONERUN_HA_LABEL_POD"  # the Kubernetes variables are read only when it is on
_MYSQL = "required when `DB_BACKEND=mysql`"

SETTINGS: tuple[Declaration, ...] = (
    Declaration(
        "ONEADMIN_PASSWORD", password(), "password of `oneadmin` (user 0)",
        field="oneadmin_password", secret=True,
        default_doc=f"{NO_DEFAULT} (on first bootstrap a strong one is generated into "
                    "`/var/lib/one/.one/one_auth`)",
        requires="required with `ONERUN_HA_MEMBERS`"),
    Declaration(
        "DB_PASSWORD", password(), "MariaDB/MySQL password of `DB_USER`",
        field="db_password", secret=True, requires=_MYSQL),
    Declaration(
        "ONE_KEY", one_key(), "key oned uses to encrypt secrets in the DB (AES-256: the first "
        "32 bytes); beside a bootstrapped DB it must be provably the DB's key "
        "([start.md](start.md))",
        field="one_key", secret=True,
        default_doc=f"{NO_DEFAULT} (oned generates one on the volume)",
        requires="required with `ONERUN_HA_MEMBERS`"),
    Declaration(
        "DB_BACKEND",
        choice({"sqlite": "sqlite", "mysql": "mysql", "mariadb": "mysql"},
               "use sqlite, mysql or mariadb",
               "`sqlite`, `mysql` or `mariadb` (= `mysql`), any letter case"),
        "database backend", default="sqlite", field="db_backend",
        requires="`sqlite` with `ONERUN_HA_MEMBERS` (for now)"),
    Declaration(
        "DB_HOST", db_host(), "database server", field="db_host", requires=_MYSQL),
    Declaration(
        "DB_PORT", integer(1, 65535), "database port", default=3306, field="db_port"),
    Declaration(
        "DB_USER",
        pattern(DB_USER,
                "{value!r} is not a valid user name (onedb passes it unquoted to a shell)",
                "use up to 80 of [A-Za-z0-9_.-]",
                "up to 80 of `[A-Za-z0-9_.-]` (onedb puts it unquoted into a shell command "
                "for `mysqldump`)"),
        "database user", default="oneadmin", field="db_user"),
    Declaration(
        "DB_NAME",
        pattern(UNQUOTED_IDENTIFIER,
                "{value!r} is not valid as an unquoted MySQL name (oned and onedb do not "
                "quote it)",
                "use up to 64 of [A-Za-z0-9_], not only digits",
                "up to 64 of `[A-Za-z0-9_]`, not only digits: oned runs `CREATE DATABASE IF "
                "NOT EXISTS <name>` unquoted, and onedb passes it unquoted to a shell"),
        "database name", default="opennebula", field="db_name"),
    Declaration(
        "OPENNEBULA_HOSTNAME", host_or_auto(),
        "oned's `HOSTNAME`, the name hypervisors use to reach the front-end",
        field="hostname", default_doc="upstream default",
        requires="not also in `ONERUN_CONFIG`"),
    Declaration(
        "OPENNEBULA_MONITOR_ADDRESS", host_or_auto(), "monitord's `NETWORK/MONITOR_ADDRESS`",
        field="monitor_address", default_doc="upstream default",
        requires="not also in `ONERUN_CONFIG`"),
    Declaration(
        "ONERUN_LISTEN_ADDRESS", ip_address(),
        "where oned, OneFlow, OneGate, OneForm and OneKS listen (the Ruby services default "
        "to loopback upstream; the chart's Service must reach them)",
        default="0.0.0.0", field="listen_address"),  # noqa: S104 - the Service reaches them
    Declaration(
        "ONERUN_CONFIG", config_file(), "path of a YAML file of overrides for the packaged "
        "configs", default={}, field="overrides", default_doc=NO_DEFAULT),
    Declaration(
        "ONERUN_LOG_FORMAT",
        choice({"text": "text", "json": "json"}, "use text or json", "`text` or `json`, any case"),
        "onerun's own log lines and the dry-run plan", default="text", field="log_format"),
    Declaration(
        "ONERUN_SSH_DIR", directory("mount the SSH key secret"),
        "directory holding oneadmin's SSH keys (a mounted Secret)", field="ssh_dir",
        default_doc=f"{NO_DEFAULT} (a key is generated once on the volume)"),
    Declaration(
        "ONERUN_ROOT", text("any path, made absolute; the `--root` option wins over it"),
        "prefix of every absolute path (tests, demos)", default_doc="`/`"),
    Declaration(
        "ONERUN_DB_WAIT_TIMEOUT", number(0, 86400),
        "seconds `onerun start` waits for the database", default=300.0,
        field="db_wait_timeout"),
    Declaration(
        "ONERUN_SERVICES", service_list(SERVICE_NAMES), "which services to run",
        field="services", default_doc="every installed service"),
    Declaration(
        "ONERUN_ACCEPT_EMPTY_DB", boolean(),
        "start a new cloud on an empty DB although this volume ran one before or holds "
        "another installation's files ([start.md](start.md))",
        default=False, field="accept_empty_db"),
    Declaration(
        "ONERUN_TRUST_ONE_KEY", boolean(),
        "write `ONE_KEY` to a volume without one_key beside a bootstrapped DB although "
        "nothing in the DB can prove it is the DB's key (no fingerprint recorded yet, no "
        "encrypted attribute); a key the DB disproves is refused all the same "
        "([start.md](start.md))",
        default=False, field="trust_one_key"),
    Declaration(
        "ONERUN_MAINTENANCE", boolean(),
        "come up for an operator whatever the DB's state and start no OpenNebula service: "
        "refusals become notes, a schema upgrade waits for the next normal start "
        "([start.md](start.md)); readiness fails",
        default=False, field="maintenance"),
    Declaration(
        "ONERUN_BACKUP_KEEP", integer(1, 1000),
        "how many of the DB backups `onerun start` makes before schema upgrades to keep; "
        "older ones are removed only after a successful upgrade "
        "([upgrades.md](upgrades.md#backups))",
        default=5, field="backup_keep"),
    Declaration(
        "ONERUN_BACKUP_KEEP_MANUAL", integer(1, 1000, example=10),
        "how many `onerun backup` files to keep; older ones are removed only after a "
        "successful `onerun backup`",
        field="backup_keep_manual", default_doc="unset: never removed"),
    Declaration(
        "ONERUN_UPGRADE_STOP_GRACE", number(0, 3600),
        "seconds a running `onedb upgrade` may go on after SIGTERM/SIGINT; then onerun stops "
        "it and restores the backup ([upgrades.md](upgrades.md#sigterm-during-an-upgrade)). "
        "Keep it well below the pod's `terminationGracePeriodSeconds` (90): the stop (up to "
        "5 s) and the restore come after it",
        default=20.0, field="upgrade_stop_grace"),
    Declaration(
        _ZONE, ha_members(), "every member's zone-service address of an HA zone, this one's "
        "included ([ha.md](ha.md))",
        default=(), default_doc=f"{NO_DEFAULT} (no zone)",
        requires="with it `ONEADMIN_PASSWORD` and `ONE_KEY` are required, `DB_BACKEND` must "
                 "be sqlite (for now), and `ONERUN_CONFIG` may not set `FEDERATION` nor "
                 "`RAFT`'s two timers"),
    Declaration(
        "ONERUN_HA_ADDRESS", text("required: one of the entries of `ONERUN_HA_MEMBERS`"),
        "this member's entry of `ONERUN_HA_MEMBERS`; its zone service listens on that port",
        only_with=_ZONE),
    Declaration(
        "ONERUN_HA_SERVER_NAME", text("up to 128 of `[A-Za-z0-9._-]`"),
        "this member's `NAME` in the zone's server pool",
        only_with=_ZONE, default_doc="`POD_NAME`, else the address's first label"),
    Declaration(
        "POD_NAME", text("as `ONERUN_HA_SERVER_NAME`"),
        "the pod's name (the chart sets it from the pod's metadata); the default of "
        "`ONERUN_HA_SERVER_NAME`",
        only_with=_ZONE),
    Declaration(
        "ONERUN_HA_ENDPOINT", text("an `http(s)://host[:port][/path]` URL"),
        "the XML-RPC endpoint the other members reach this oned by",
        only_with=_ZONE, default_doc="`http://<address host>:<oned PORT>/RPC2`"),
    Declaration(
        "ONERUN_HA_ELECTION_TIMEOUT_MS", integer(500, 60000),
        "oned.conf's `RAFT/ELECTION_TIMEOUT_MS`",
        default=HA_ELECTION_TIMEOUT_MS, only_with=_ZONE),
    Declaration(
        "ONERUN_HA_BROADCAST_TIMEOUT_MS", integer(50, 10000),
        "oned.conf's `RAFT/BROADCAST_TIMEOUT_MS`, the leader's heartbeat",
        default=HA_BROADCAST_TIMEOUT_MS, only_with=_ZONE,
        requires="at most a quarter of `ONERUN_HA_ELECTION_TIMEOUT_MS`"),
    Declaration(
        "ONERUN_HA_WAIT_TIMEOUT", number(0, 86400),
        "seconds a member waits for the zone (peers, a leader) before exit 4",
        default=HA_WAIT_TIMEOUT, only_with=_ZONE),
    Declaration(
        _LABEL, boolean(),
        "`1`: oned's Raft hooks run `onerun raft-hook leader` (or `follower`), which labels this "
        "pod `onerun.io/raft-role` through the Kubernetes API ([ha.md](ha.md), \"Leader "
        "routing\")",
        default=False, only_with=_ZONE,
        requires="with it `ONERUN_CONFIG` may not set `RAFT_LEADER_HOOK` nor "
                 "`RAFT_FOLLOWER_HOOK`"),
    Declaration(
        "POD_NAMESPACE", text("a Kubernetes namespace name"),
        "the pod's namespace (the chart sets it from the downward API): the pod to label",
        only_with=_LABEL, requires=f"required with `{_LABEL}=1`"),
    Declaration(
        "KUBERNETES_SERVICE_HOST", text("a host name or an IP address"),
        "the Kubernetes API server (the kubelet sets it): where the pod is labelled",
        only_with=_LABEL, requires=f"required with `{_LABEL}=1`"),
    Declaration(
        "KUBERNETES_SERVICE_PORT", text("a port number"),
        "the Kubernetes API server's port (the kubelet sets it)",
        only_with=_LABEL, requires=f"required with `{_LABEL}=1`"),
)
