"""Render /etc/one from the image's pristine copy (etc-dist) plus settings, at every start.

Why from pristine every time: /etc/one is an emptyDir in Kubernetes and an edit applied to
an already-edited file accumulates (the community image's sed approach). Rendering the
whole tree fresh from /usr/share/one/etc-dist makes start idempotent: same settings and
image, same bytes.

onerun owns oned.conf's DB vector (from DB_*), HOSTNAME, the listen addresses of oned,
OneFlow, OneGate, OneForm and OneKS, and monitord's NETWORK/MONITOR_ADDRESS; the operator's
ONERUN_CONFIG overrides are applied after those (docs/configuration-engine.md).
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from onerun.config import oneconf, yamlconf
from onerun.errors import Problem, SettingsError, UnsafeStateError
from onerun.fileerrors import file_error
from onerun.ha.conf import apply_zone
from onerun.layout import Layout
from onerun.plan import Action, Check, EnsureDirectory, WriteFile
from onerun.settings import Settings

TEMPLATE_FILES = {"oned.conf": "oned", "monitord.conf": "monitord"}
YAML_FILES = {
    "oneflow-server.conf": "oneflow",
    "onegate-server.conf": "onegate",
    "fireedge-server.conf": "fireedge",
    "oneform-server.conf": "oneform",
    "onehem-server.conf": "onehem",
    "oneks-server.conf": "oneks",
}
SECTION_FILES = {section: name for name, section in {**TEMPLATE_FILES, **YAML_FILES}.items()}
# Ruby services whose packaged bind address is loopback; the chart's Service must reach them.
LISTENING_SERVICES = frozenset({"oneflow", "onegate", "oneform", "oneks"})

SQLITE_TIMEOUT_MS = 2500  # oned's default busy timeout (src/nebula/Nebula.cc, DB TIMEOUT)
MYSQL_CONNECTIONS = 25  # oned's default (src/nebula/Nebula.cc, DB CONNECTIONS)
ONED_MODE = 0o600  # holds the DB password
RENDERED_MODE = 0o644

_WHY = {
    "monitord.conf": "NETWORK/MONITOR_ADDRESS, ONERUN_CONFIG",
    **{name: "listen address, ONERUN_CONFIG"
       for name, section in YAML_FILES.items() if section in LISTENING_SERVICES},
}
_FIX_ETC_DIST = (
    "build the image so it copies the packaged /etc/one to /usr/share/one/etc-dist "
    "(onerun renders /etc/one from that pristine copy at every start)"
)


@functools.cache
def _jinja() -> jinja2.Environment:
    """Templates for the fragments onerun writes itself; not HTML, so no autoescape."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,  # noqa: S701 - oned's grammar, not HTML; one_quote does the quoting
    )
    env.filters["one_quote"] = lambda value, name: oneconf.quote(name, str(value))
    return env


def db_vector(settings: Settings) -> str:
    """oned.conf's DB vector for the settings, as template text (contains the password).

    One template per DB_BACKEND: each holds only the keys oned reads for that backend.
    """
    password = settings.db_password.reveal() if settings.db_password is not None else ""
    return _jinja().get_template(f"db_vector_{settings.db_backend}.j2").render(
        server=settings.db_host or "localhost",
        port=settings.db_port,
        user=settings.db_user,
        password=password,
        db_name=settings.db_name,
        connections=MYSQL_CONNECTIONS,
        compare_binary="no",
        timeout=SQLITE_TIMEOUT_MS,
    )


def _override_problem(section: str, key: str, rule: str, fix: str) -> Problem:
    return Problem(f"ONERUN_CONFIG: {section}.{key}", rule, fix)


def apply_template_overrides(
    document: oneconf.Document, section: str, overrides: Mapping[str, Any]
) -> list[Problem]:
    """ONERUN_CONFIG rules for the template grammar; returns problems instead of guessing.

    A scalar replaces the attribute, a mapping merges into the packaged vector (other keys
    kept), a list replaces every occurrence of a multi-valued attribute.
    """
    problems: list[Problem] = []
    filename = SECTION_FILES[section]
    for key, value in overrides.items():
        present = document.attributes(key)
        try:
            if isinstance(value, list):
                document.set_all(key, value)
            elif isinstance(value, Mapping):
                if len(present) > 1:
                    problems.append(_override_problem(
                        section, key, f"appears {len(present)} times in the packaged {filename}",
                        "give a list of vectors to replace every occurrence"))
                elif present and not present[0].is_vector:
                    problems.append(_override_problem(
                        section, key, f"is a single value in the packaged {filename}",
                        "give a scalar"))
                else:
                    document.merge_vector(key, value)
            elif present and present[0].is_vector:
                problems.append(_override_problem(
                    section, key, f"is a vector in the packaged {filename}",
                    "give a mapping of the keys to change"))
            else:
                document.set(key, value)
        except oneconf.UnwritableValueError as exc:
            problems.append(_override_problem(section, key, exc.rule, "change the value"))
    return problems


def _render_oned(text: str, settings: Settings,
                 server_id: int | None) -> tuple[str, list[Problem]]:
    document = oneconf.parse(text)
    try:
        fragment = db_vector(settings)
    except oneconf.UnwritableValueError as exc:
        variable = {"DB/PASSWD": "DB_PASSWORD", "DB/USER": "DB_USER",
                    "DB/SERVER": "DB_HOST", "DB/DB_NAME": "DB_NAME"}.get(exc.attribute, "DB_*")
        return "", [Problem(variable, exc.rule, f"choose another {variable}")]
    document.set_text("DB", fragment)
    if settings.hostname:
        document.set("HOSTNAME", settings.hostname)
    document.set("LISTEN_ADDRESS", settings.listen_address)
    if "GRPC_LISTEN_ADDRESS" in document:
        document.set("GRPC_LISTEN_ADDRESS", settings.listen_address)
    if settings.ha is not None:
        apply_zone(document, settings.ha, server_id)
    problems = apply_template_overrides(document, "oned", settings.overrides.get("oned", {}))
    return document.dump(), problems


def _render_monitord(text: str, settings: Settings) -> tuple[str, list[Problem]]:
    document = oneconf.parse(text)
    if settings.monitor_address:
        document.merge_vector("NETWORK", {"MONITOR_ADDRESS": settings.monitor_address})
    overrides = settings.overrides.get("monitord", {})
    problems = apply_template_overrides(document, "monitord", overrides)
    return document.dump(), problems


def _render_yaml(text: str, section: str, settings: Settings,
                 notes: list[Check]) -> str | None:
    """The edited YAML, or None when nothing changes (the file is then copied as is)."""
    overrides = settings.overrides.get(section, {})
    if section not in LISTENING_SERVICES and not overrides:
        return None
    document = yamlconf.load(text)
    if section in LISTENING_SERVICES and yamlconf.set_listen_address(
        document, settings.listen_address
    ) is None:
        notes.append(Check(f"render {SECTION_FILES[section]}", "note",
                           "no :host: or :server: :bind: key; listen address left as packaged"))
    yamlconf.deep_merge(document.data, overrides)
    return document.dump()


def _raise(error: OSError) -> None:
    raise error


def _walk(source: Path) -> tuple[list[Path], list[Path]]:
    """Directories and files of the tree, relative and sorted, so output is deterministic.

    A directory that cannot be listed raises: skipping it (os.walk's default) would leave
    its files silently out of /etc/one.
    """
    directories: list[Path] = [Path()]
    files: list[Path] = []
    for top, dirnames, filenames in os.walk(source, onerror=_raise):
        dirnames.sort()
        relative = Path(top).relative_to(source)
        directories.extend(relative / name for name in dirnames)
        files.extend(relative / name for name in sorted(filenames))
    return directories, files


def _render_one(relative: Path, raw: bytes, settings: Settings, notes: list[Check],
                server_id: int | None) -> tuple[bytes | None, list[Problem]]:
    """Rendered bytes of a file onerun edits (None: copy it as is) and any problems."""
    name = relative.as_posix()
    text = raw.decode("utf-8", errors="surrogateescape")
    try:
        if name == "oned.conf":
            rendered, problems = _render_oned(text, settings, server_id)
        elif name == "monitord.conf":
            rendered, problems = _render_monitord(text, settings)
        elif name in YAML_FILES:
            yaml_text = _render_yaml(text, YAML_FILES[name], settings, notes)
            if yaml_text is None:
                return None, []
            rendered, problems = yaml_text, []
        else:
            return None, []
    except oneconf.TemplateSyntaxError as exc:
        raise UnsafeStateError(f"the image's etc-dist/{name} cannot be parsed: {exc}",
                               _FIX_ETC_DIST) from exc
    return rendered.encode("utf-8", errors="surrogateescape"), problems


def render_configs(settings: Settings, layout: Layout,
                   server_id: int | None = None) -> list[Action]:
    """The actions writing the whole /etc/one tree; raises SettingsError on bad overrides,
    UnsafeStateError when the image's pristine copy cannot be read. ``server_id`` is this
    member's in an HA zone (docs/ha.md); None there means solo, not yet registered."""
    source = layout.etc_dist
    try:
        if not source.is_dir():
            raise UnsafeStateError(f"{source} (the pristine OpenNebula configs) is missing",
                                   _FIX_ETC_DIST)
        return _render_tree(settings, layout, source, server_id)
    except OSError as error:  # is_dir() too: it raises when a parent cannot be searched
        raise file_error(error, f"reading the image's pristine configs in {source}",
                         layout, source) from error


def _render_tree(settings: Settings, layout: Layout, source: Path,
                 server_id: int | None) -> list[Action]:
    directories, files = _walk(source)
    actions: list[Action] = []
    notes: list[Check] = []
    problems: list[Problem] = []
    for relative in directories:
        mode = stat.S_IMODE((source / relative).stat().st_mode) | 0o700  # we rewrite it
        actions.append(EnsureDirectory(layout.etc_one / relative, mode,
                                       why="rendered from etc-dist"))
    for relative in files:
        path = source / relative
        raw = path.read_bytes()
        rendered, found = _render_one(relative, raw, settings, notes, server_id)
        problems.extend(found)
        target = layout.etc_one / relative
        if rendered is None:
            actions.append(WriteFile(target, raw, stat.S_IMODE(path.stat().st_mode),
                                     why="copied from etc-dist", quiet=True))
        elif relative.as_posix() == "oned.conf":
            actions.append(WriteFile(target, rendered, ONED_MODE, sensitive=True,
                                     why="rendered: DB vector, HOSTNAME, listen address, "
                                         "ONERUN_CONFIG"))
        else:
            why = _WHY.get(relative.as_posix(), "ONERUN_CONFIG")
            actions.append(WriteFile(target, rendered, RENDERED_MODE, why=f"rendered: {why}"))
    present = {relative.as_posix() for relative in files}
    for section in sorted(settings.overrides):
        filename = SECTION_FILES.get(section)
        if filename is not None and filename not in present:
            notes.append(Check(f"render {filename}", "skipped",
                               f"ONERUN_CONFIG section {section!r} ignored: "
                               f"{filename} is not installed in this image"))
    if problems:
        raise SettingsError(problems)
    return actions + notes
