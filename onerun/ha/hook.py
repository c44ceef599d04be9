"""``onerun raft-hook leader|follower --api URL --namespace NS --pod NAME``: the command oned
runs as RAFT_LEADER_HOOK / RAFT_FOLLOWER_HOOK (onerun/ha/conf.py renders them).

oned forks it from a thread of its own and logs its exit code and output in oned.log
(src/hm/ExecuteHook.cc in OpenNebula/one), so it says what it did on one line and never
holds oned's role change up: one attempt, a short timeout, and exit 0 even when the API
cannot be reached (the label then stays as it was until the next role change). Only a
command line onerun could not have rendered exits 2. Stdlib only, dispatched before click
(onerun/entry.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from onerun.ha.label import ROLE_LABEL, ROLES, LabelError, label_pod
from onerun.layout import Layout

TIMEOUT_SECONDS = 3.0
USAGE = ("usage: onerun raft-hook leader|follower --api https://HOST:PORT --namespace NS "
         "--pod NAME")
_OPTIONS = ("--api", "--namespace", "--pod")


def parse_args(argv: Sequence[str]) -> tuple[str, dict[str, str]]:
    """(role, {option: value}); ValueError saying what is wrong."""
    if not argv or argv[0] not in ROLES:
        raise ValueError(f"the first argument must be {' or '.join(ROLES)}")
    rest = list(argv[1:])
    if len(rest) % 2:
        raise ValueError(f"{rest[-1]} has no value")
    options = dict(zip(rest[::2], rest[1::2], strict=True))
    unknown = sorted(set(options) - set(_OPTIONS))
    missing = [name for name in _OPTIONS if not options.get(name)]
    if unknown or missing:
        raise ValueError("; ".join(
            ([f"unknown option(s) {', '.join(unknown)}"] if unknown else [])
            + ([f"missing {', '.join(missing)}"] if missing else [])))
    return argv[0], options


def main(argv: Sequence[str]) -> int:
    try:
        role, options = parse_args(argv)
    except ValueError as exc:
        print(f"onerun raft-hook: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    where = f"{options['--namespace']}/{options['--pod']}"
    try:
        label_pod(options["--api"], options["--namespace"], options["--pod"], role,
                  credentials=Layout.from_env().service_account, timeout=TIMEOUT_SECONDS)
    except LabelError as exc:
        print(f"onerun raft-hook: pod {where} not labelled {ROLE_LABEL}={role}: {exc}",
              file=sys.stderr)
        return 0
    print(f"onerun raft-hook: pod {where} labelled {ROLE_LABEL}={role}")
    return 0
