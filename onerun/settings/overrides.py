"""ONERUN_CONFIG's rule: a YAML file of overrides, one section per packaged config file.

Read and checked for shape here (sections, attribute names, vector shapes, the bounds
below); values are checked against each packaged file when rendering
(``onerun.config.render``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from onerun.settings.declaration import Declaration, Reading, Rule

# ONERUN_CONFIG sections, by the grammar of the file each one overrides.
TEMPLATE_SECTIONS = ("oned", "monitord")
YAML_SECTIONS = ("oneflow", "onegate", "fireedge", "oneform", "onehem", "oneks")

# ONERUN_CONFIG bounds: the packaged YAML configs nest 3 levels deep (7.0, 7.4).
CONFIG_MAX_DEPTH = 32
CONFIG_MAX_VALUES = 100_000
CONFIG_FILE_MAX_BYTES = 1024 * 1024  # a Kubernetes ConfigMap holds at most 1 MiB

_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_]+")


def config_file() -> Rule:
    """The path of the overrides file; its value is the overrides, {section: body}."""

    def parse(reading: Reading, declaration: Declaration, raw: str) -> Mapping[str, Any]:
        return _load_overrides(reading, declaration.name, raw)

    return Rule(parse, "see [ONERUN_CONFIG](#onerun_config)")


class _Unexpandable(Exception):
    """ONERUN_CONFIG's data cannot be turned into plain, finite, shallow values."""


class _Expander:
    """Copies loaded YAML so no mapping or list is shared, bounded in depth and size.

    ruamel writes an object met twice as an anchor and an alias (``&id001``/``*id001``),
    which the Ruby services' YAML loader refuses; so aliases become plain copies here. The
    bounds keep a self-referencing alias or an alias bomb from hanging or exhausting the
    start, and keep every later recursive step (merge, dump) far from Python's limit.
    """

    def __init__(self) -> None:
        self.budget = CONFIG_MAX_VALUES

    def copy(self, value: Any, depth: int = 0) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _Unexpandable(f"expands to more than {CONFIG_MAX_VALUES} values "
                                "(through YAML aliases)")
        if not isinstance(value, dict | list):
            return value
        if depth >= CONFIG_MAX_DEPTH:
            raise _Unexpandable(f"nests deeper than {CONFIG_MAX_DEPTH} levels (or a YAML alias "
                                "refers to itself)")
        if isinstance(value, dict):
            return {key: self.copy(item, depth + 1) for key, item in value.items()}
        return [self.copy(item, depth + 1) for item in value]


def _load_overrides(collector: Reading, name: str, path_text: str) -> Mapping[str, Any]:
    """Parse ONERUN_CONFIG into {section: overrides}, checking shape, not values."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    text = collector.file_text(name, path_text, CONFIG_FILE_MAX_BYTES, "mount the file there")
    if text is None:
        return {}
    flatten = "write plain values: the packaged service configs nest 3 levels at most"
    try:
        data = _Expander().copy(YAML(typ="safe", pure=True).load(text))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        collector.problem(name, f"{path_text} is not valid YAML{where}", "fix the YAML syntax")
        return {}
    except RecursionError:  # the YAML parser itself recurses once per level
        collector.problem(name, f"{path_text} nests too deep to read", flatten)
        return {}
    except _Unexpandable as exc:
        collector.problem(name, f"{path_text} {exc}", flatten)
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        collector.problem(name, "must be a mapping of sections", "write e.g. `oned: {...}`")
        return {}
    sections: dict[str, Any] = {}
    known = TEMPLATE_SECTIONS + YAML_SECTIONS
    for section, body in data.items():
        if section not in known:
            collector.problem(
                name, f"unknown section {section!r}", f"use one of: {', '.join(known)}"
            )
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            collector.problem(
                f"{name}: {section}", "must be a mapping", f"write `{section}: {{KEY: value}}`"
            )
            continue
        if section in TEMPLATE_SECTIONS:
            _check_template_overrides(collector, name, section, body)
        sections[section] = body
    return sections


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _check_template_overrides(
    collector: Reading, name: str, section: str, body: dict[Any, Any]
) -> None:
    """Keys must be attribute names; values a scalar, a vector (mapping) or a list of them."""
    where = f"{name}: {section}"
    for key, value in body.items():
        if not isinstance(key, str) or not _ATTRIBUTE_NAME.fullmatch(key):
            collector.problem(where, f"{key!r} is not an attribute name", "use [A-Za-z0-9_]+")
            continue
        if section == "oned" and key.upper() == "DB":
            collector.problem(
                f"{where}.DB",
                "the DB vector is built by onerun from DB_* variables",
                "remove it and set DB_BACKEND, DB_HOST, DB_PORT, DB_USER, DB_NAME, DB_PASSWORD",
            )
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            ok = _is_scalar(item) or (
                isinstance(item, dict)
                and all(isinstance(k, str) and _ATTRIBUTE_NAME.fullmatch(k) for k in item)
                and all(_is_scalar(v) for v in item.values())
            )
            if not ok:
                collector.problem(
                    f"{where}.{key}",
                    "must be a scalar, a mapping of scalars, or a list of those",
                    "vectors hold only KEY: value pairs",
                )
                break


def get_key(body: Mapping[Any, Any], name: str) -> Any:
    """Value of attribute ``name`` in ``body``; oned upper-cases names, so ``network`` counts."""
    for key, value in body.items():
        if isinstance(key, str) and key.upper() == name:
            return value
    return None


def has_key(body: Mapping[Any, Any], name: str) -> bool:
    return any(isinstance(key, str) and key.upper() == name for key in body)
