"""Benchmark: `onerun start` work (up to, not including, the exec) on a large volume.

The community entrypoint runs `chown -R` over /var/lib/one at every start, so its start
time grows with the datastores. onerun touches a fixed set of paths. This measures
onerun.start.prepare + Plan.apply (the package's API, no exec) on an empty volume and on
one holding 200,000 files, in the same run, and prints the ratio.
Target: the large volume within 10% of the empty one. Exit 1 when missed.

    .venv/bin/python bench/bench_start.py [--files 200000] [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from onerun.layout import Layout
from onerun.log import Logger
from onerun.plan import ApplyContext
from onerun.settings import load_settings
from onerun.start import prepare

PROJECT = Path(__file__).resolve().parent.parent
UPSTREAM = PROJECT.parent / "shared" / "fixtures" / "opennebula" / "7.4.0" / "etc"
SAMPLE = PROJECT / "demo" / "etc-dist"
TARGET_RATIO = 1.10


def lay_out(root: Path, files: int) -> None:
    source = UPSTREAM if UPSTREAM.is_dir() else SAMPLE
    shutil.copytree(source, root / "usr/share/one/etc-dist")
    datastores = root / "var/lib/one/datastores"
    per_dir = 1000
    for index in range(files):
        directory = datastores / str(index // per_dir)
        if index % per_dir == 0:
            directory.mkdir(parents=True)
        (directory / f"disk.{index}").write_bytes(b"")


def time_start(root: Path, runs: int) -> list[float]:
    settings = load_settings({"ONEADMIN_PASSWORD": "bench-Password-1"}, root=root)
    layout = Layout(root)
    quiet = Logger("text", stream=open("/dev/null", "w"))  # noqa: SIM115
    account = layout.oneadmin
    samples = []
    for _ in range(runs):
        begin = time.perf_counter()
        plan = prepare(settings, layout, quiet)
        plan.apply(ApplyContext(layout, account.uid, account.gid, quiet.info))
        samples.append(time.perf_counter() - begin)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty, large = Path(tmp) / "empty", Path(tmp) / "large"
        lay_out(empty, 0)
        print(f"laying out {args.files} files ...", flush=True)
        lay_out(large, args.files)
        # Alternate so drift on a shared machine hits both sides alike; first run warms up.
        time_start(empty, 1)
        time_start(large, 1)
        empty_samples: list[float] = []
        large_samples: list[float] = []
        for _ in range(args.runs):
            empty_samples += time_start(empty, 1)
            large_samples += time_start(large, 1)
    empty_median = statistics.median(empty_samples)
    large_median = statistics.median(large_samples)
    ratio = large_median / empty_median
    print(f"{'volume':<16}{'median ms':>12}{'min ms':>10}")
    print(f"{'empty':<16}{empty_median * 1000:>12.2f}{min(empty_samples) * 1000:>10.2f}")
    print(f"{f'{args.files} files':<16}{large_median * 1000:>12.2f}"
          f"{min(large_samples) * 1000:>10.2f}")
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"ratio large/empty: {ratio:.3f} (target <= {TARGET_RATIO:.2f}: {verdict})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
