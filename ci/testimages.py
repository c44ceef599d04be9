"""The images of the container test tier, built on this machine from public inputs only.

- a Debian 12 base from ``mmdebstrap`` (no registry can be pulled from here), imported once
  and reused while its inputs are unchanged: its tag is a hash of them, its tarball is cached
  in the git-ignored ``.cache/containers``;
- the front-end image of each OpenNebula tree in ``../shared/opennebula-build``, built from
  ``docker/Dockerfile`` with ``ONE_SOURCE=tree`` (every layer after OpenNebula's own is the
  release image's);
- a MariaDB image (Debian's mariadb-server) that creates at first start what the chart's
  MariaDB would: the database and its user, from secret files (tests/containers/mariadb).

The engine is podman (its Docker-compatible API serves testcontainers) or Docker; images are
built with ``--pull=never``. ``python -m ci.testimages`` builds whatever is missing and prints
the tags; the container tests call :func:`ensure` too, so either order works.
``python -m ci.testimages engine`` starts podman's API service for testcontainers.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
CACHE = PROJECT / ".cache" / "containers"
TREES = PROJECT.parent / "shared" / "opennebula-build"
MARIADB_CONTEXT = PROJECT / "tests" / "containers" / "mariadb"

BASE_SUITE = "bookworm"
BASE_VARIANT = "minbase"
# Only what every image needs before its own apt step: the Dockerfile installs the rest.
BASE_PACKAGES = ("ca-certificates", "python3")
# Extra CA certificates of the build machine (a network that inspects TLS): the base trusts
# them too, or pip and apt over HTTPS fail inside the builds. Part of the base's identity.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
REPOSITORY = "localhost/onerun-test"
# The front-end images carry the checkout's onerun: clones that test side by side on one
# engine give theirs their own name (e.g. localhost/onerun-test-ha) so neither runs the
# other's code. The base and MariaDB images hold no onerun and stay shared.
FRONTEND_REPOSITORY = os.environ.get("ONERUN_TEST_REPOSITORY") or REPOSITORY
CONTAINERS_CONF = PROJECT / "tests" / "containers" / "containers.conf"
PODMAN_SOCKET = Path("/run/podman/podman.sock")


class ImageBuildError(RuntimeError):
    """A build step failed; the message names the step and points at its log."""


@dataclass(frozen=True)
class TestImages:
    """Tags of the tier's images: the base, each OpenNebula release's front-end, MariaDB."""

    base: str
    frontends: dict[str, str]
    mariadb: str


def engine_cli() -> str:
    """podman where installed (this project's machines), else docker (GitHub runners)."""
    for name in ("podman", "docker"):
        if shutil.which(name):
            if name == "podman":
                os.environ.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
            return name
    raise ImageBuildError("neither podman nor docker is installed")


def _answers(socket_path: Path) -> bool:
    # By name: mypy would take the repository's docker/ directory for the package.
    docker = importlib.import_module("docker")
    try:
        docker.DockerClient(base_url=f"unix://{socket_path}", timeout=5).ping()
    except Exception:  # not there yet, or not an engine
        return False
    return True


def ensure_podman_service(socket_path: Path = PODMAN_SOCKET, timeout: float = 30.0) -> str:
    """podman's Docker-compatible API (testcontainers' engine here), started when it does
    not answer yet; the DOCKER_HOST value to use. Needs root: it is the machine's engine."""
    url = f"unix://{socket_path}"
    if _answers(socket_path):
        return url
    engine_cli()  # sets CONTAINERS_CONF for the service
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    log = (CACHE / "podman-service.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.Popen(["podman", "system", "service", "--time=0", url], stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not _answers(socket_path):
        if time.monotonic() > deadline:
            raise ImageBuildError(f"podman's API did not answer at {url}; see {log}")
        time.sleep(0.2)
    return url


def tree_versions(trees: Path = TREES) -> list[str]:
    """Releases with a front-end tree in ``trees`` (the FireEdge overlay is not one)."""
    prefix, suffix = "opennebula-", "-debian12-amd64.tar.zst"
    names = (p.name for p in trees.glob(f"{prefix}*{suffix}"))
    versions = [n[len(prefix) : -len(suffix)] for n in names]
    return sorted((v for v in versions if v.count(".") == 2 and "-" not in v),
                  key=lambda v: tuple(int(p) for p in v.split(".")))


def missing_inputs_reason(trees: Path = TREES) -> str | None:
    """Why the tier cannot run here (for its skip message), or None."""
    if not trees.is_dir():
        return (f"{trees} is absent: the container tier needs the OpenNebula trees built "
                "from the upstream tags (see docs/testing.md)")
    if not tree_versions(trees):
        return f"{trees} holds no opennebula-X.Y.Z-debian12-amd64.tar.zst"
    return None


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def _local_cas() -> list[Path]:
    return sorted(LOCAL_CAS.glob("*.crt")) if LOCAL_CAS.is_dir() else []


def base_key() -> str:
    """The base's identity: its mmdebstrap inputs (a new input means a new base)."""
    recipe = {"suite": BASE_SUITE, "variant": BASE_VARIANT, "include": BASE_PACKAGES}
    return _digest(json.dumps(recipe, sort_keys=True).encode(),
                   *(ca.read_bytes() for ca in _local_cas()))


def _run(argv: list[str], log: Path, step: str) -> None:
    """Run one build step with its output in ``log`` (never on the terminal: it is long)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise ImageBuildError(f"{step} failed (exit {result.returncode}); log {log}:\n"
                              + "\n".join(tail))


def image_exists(cli: str, tag: str) -> bool:
    return image_id(cli, tag) is not None


def image_id(cli: str, tag: str) -> str | None:
    found = subprocess.run([cli, "image", "inspect", "--format", "{{.Id}}", tag],
                           capture_output=True, text=True, check=False)
    if found.returncode != 0:
        return None
    return found.stdout.strip() or None


def _build(cli: str, argv: list[str], tag: str, log: Path) -> str:
    """``cli build argv -t tag``; the image the tag named before is removed when the build
    replaced it, so rebuilds leave no untagged images behind (its layers shared with the new
    one stay)."""
    before = image_id(cli, tag)
    _run([cli, "build", *_build_flags(cli), *argv, "-t", tag], log, f"build of {tag}")
    if before is not None and image_id(cli, tag) != before:
        subprocess.run([cli, "rmi", before], capture_output=True, check=False)
    return tag


def ensure_base(cli: str, log: Path) -> str:
    """The Debian 12 base image, made by mmdebstrap once per recipe; TEST_BASE_IMAGE names
    one to pull instead where a registry is reachable (GitHub: docker.io/library/debian:12)."""
    pulled = os.environ.get("TEST_BASE_IMAGE")
    if pulled:
        if not image_exists(cli, pulled):
            _run([cli, "pull", pulled], log, f"pull of {pulled}")
        return pulled
    tag = f"{REPOSITORY}-base:{base_key()}"
    if image_exists(cli, tag):
        return tag
    tarball = CACHE / f"base-{base_key()}.tar"
    if not tarball.is_file():
        partial = tarball.with_suffix(".partial")
        hooks = [f'--customize-hook=copy-in {ca} {LOCAL_CAS}' for ca in _local_cas()]
        if hooks:
            hooks.append('--customize-hook=chroot "$1" update-ca-certificates')
        _run(["mmdebstrap", "--format=tar", f"--variant={BASE_VARIANT}",
              f"--include={','.join(BASE_PACKAGES)}", *hooks, BASE_SUITE, str(partial)],
             log, "mmdebstrap of the Debian 12 base")
        partial.rename(tarball)
    _run([cli, "import", str(tarball), tag], log, f"import of {tarball.name}")
    return tag


def verify_tree(trees: Path, version: str) -> None:
    """The tree matches SHA256SUMS (a truncated copy would build a broken image)."""
    name = f"opennebula-{version}-debian12-amd64.tar.zst"
    sums = (trees / "SHA256SUMS").read_text().splitlines()
    expected = next((line.split()[0] for line in sums if line.split()[-1].lstrip("*") == name),
                    None)
    if expected is None:
        raise ImageBuildError(f"{name} is not listed in {trees / 'SHA256SUMS'}")
    h = hashlib.sha256()
    with (trees / name).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise ImageBuildError(f"{name} does not match SHA256SUMS: rebuild or recopy it")


def _build_flags(cli: str) -> list[str]:
    """Never pull; podman needs Docker's image format for SHELL and HEALTHCHECK."""
    return ["--pull=never", "--format=docker"] if cli == "podman" else ["--pull=false"]


def build_frontend(cli: str, base: str, version: str, trees: Path, log: Path) -> str:
    """The release image's Dockerfile with OpenNebula ``version`` from its tree."""
    verify_tree(trees, version)
    tag = f"{FRONTEND_REPOSITORY}:{version}"
    with tempfile.TemporaryDirectory(prefix="onetree-") as context:
        # Only this release's tarball in the named context (a hard link: same file system).
        source = trees / f"opennebula-{version}-debian12-amd64.tar.zst"
        target = Path(context) / source.name
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        return _build(cli, ["-f", str(PROJECT / "docker" / "Dockerfile"),
                            "--build-arg", "ONE_SOURCE=tree", "--build-arg", f"BASE_IMAGE={base}",
                            "--build-arg", f"ONE_VERSION={version}",
                            "--build-context", f"onetree={context}", str(PROJECT)], tag, log)


def build_mariadb(cli: str, base: str, log: Path) -> str:
    tag = f"{REPOSITORY}-mariadb:latest"
    return _build(cli, ["--build-arg", f"BASE_IMAGE={base}", str(MARIADB_CONTEXT)], tag, log)


def ensure(trees: Path = TREES, log: Path | None = None) -> TestImages:
    """Build what is missing or stale (layer caches make an unchanged rebuild quick); the
    front-ends only where the trees are (the release workflow tests its own image)."""
    cli = engine_cli()
    log = log or CACHE / "build.log"
    base = ensure_base(cli, log)
    versions = tree_versions(trees) if trees.is_dir() else []
    frontends = {v: build_frontend(cli, base, v, trees, log) for v in versions}
    return TestImages(base=base, frontends=frontends, mariadb=build_mariadb(cli, base, log))


def main(argv: list[str]) -> int:
    """``engine``: start podman's API service (prints DOCKER_HOST); no argument: build."""
    if argv == ["engine"]:
        try:
            print(ensure_podman_service())
        except ImageBuildError as exc:
            print(exc, file=sys.stderr)
            return 1
        return 0
    reason = missing_inputs_reason()
    if reason is not None:
        print(f"no test images: {reason}", file=sys.stderr)
        return 1
    try:
        images = ensure()
    except ImageBuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps({"base": images.base, "frontends": images.frontends,
                      "mariadb": images.mariadb}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
