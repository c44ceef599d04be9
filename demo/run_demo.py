"""`make demo`: run onerun's main job on its embedded default (sqlite) in a throwaway root.

Lays out demo-root/ with packaged configs (OpenNebula's upstream 7.4.0 defaults from
../shared when present, else the small sample in demo/etc-dist written for this project),
then runs `onerun start --dry-run` and `onerun render` there and shows what was written.
Nothing outside demo-root/ is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
ROOT = PROJECT / "demo-root"
UPSTREAM = PROJECT.parent / "shared" / "fixtures" / "opennebula" / "7.4.0" / "etc"


def lay_out() -> str:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    etc_dist = ROOT / "usr/share/one/etc-dist"
    source = UPSTREAM if UPSTREAM.is_dir() else HERE / "etc-dist"
    shutil.copytree(source, etc_dist)
    return "upstream 7.4.0 defaults" if source == UPSTREAM else "the project's sample configs"


def onerun(*args: str) -> int:
    # No ONEADMIN_PASSWORD: the plan shows the first-install path (a generated password).
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}
    print(f"\n$ onerun {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "onerun", *args], env=env, check=False).returncode


def main() -> int:
    source = lay_out()
    print(f"demo root: {ROOT} (packaged configs: {source})")
    code = onerun("start", "--dry-run", "--root", str(ROOT))
    print(f"(dry run exit code {code})")
    if code != 0:
        return code
    code = onerun("render", "--root", str(ROOT))
    if code != 0:
        return code
    oned_conf = ROOT / "etc/one/oned.conf"
    print(f"\nRendered files under {ROOT / 'etc/one'}:")
    for path in sorted((ROOT / "etc/one").rglob("*")):
        if path.is_file():
            print(f"  {oct(path.stat().st_mode & 0o777)}  {path.relative_to(ROOT)}")
    print("\nThe DB vector onerun wrote into oned.conf:")
    lines = oned_conf.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("DB"))
    end = next(i for i in range(start, len(lines)) if "]" in lines[i])
    print("\n".join(lines[start:end + 1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
