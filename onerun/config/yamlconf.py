"""Edits of the YAML service configs (OneFlow, OneGate, FireEdge, OneForm, HEM, OneKS).

ruamel.yaml's round-trip mode keeps comments, key order and quoting, so a rendered file
differs from the packaged one only where onerun or the operator changed something.
The Ruby services use symbol keys (``:host: 127.0.0.1``): YAML reads the key as the string
``":host"`` and ruamel writes it back as ``:host:``; overrides name keys the same way.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.util import load_yaml_guess_indent


@dataclass
class YamlDocument:
    """A loaded service config plus the indentation it was written with."""

    data: Any
    yaml: YAML

    def dump(self) -> str:
        out = io.StringIO()
        self.yaml.dump(self.data, out)
        return out.getvalue()


def load(text: str) -> YamlDocument:
    """Load ``text`` for round-trip editing, keeping its sequence indentation style."""
    _, indent, block_seq_indent = load_yaml_guess_indent(text)
    yaml = YAML(typ="rt", pure=True)
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines the packaged file wrote on one line
    yaml.indent(mapping=2, sequence=indent, offset=block_seq_indent or 0)
    data = yaml.load(text)
    return YamlDocument(CommentedMap() if data is None else data, yaml)


def deep_merge(target: Any, overrides: Mapping[str, Any]) -> None:
    """Merge ``overrides`` into ``target`` in place: mappings merge, lists and scalars replace."""
    for key, value in overrides.items():
        current = target.get(key) if isinstance(target, Mapping) else None
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            deep_merge(current, value)
        else:
            target[key] = value


def set_path(document: YamlDocument, path: Sequence[str], value: Any) -> None:
    """Set ``document[path[0]][path[1]]...`` creating missing mappings on the way."""
    node = document.data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, Mapping):
            child = CommentedMap()
            node[key] = child
        node = child
    node[path[-1]] = value


def get_path(document: YamlDocument, path: Sequence[str]) -> Any:
    """The value at ``path`` or None."""
    node = document.data
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def listen_key(document: YamlDocument) -> tuple[str, ...] | None:
    """Where this file keeps its bind address, in its own release's format.

    OneGate 7.4 and OneKS read ``:server: {:bind:}``; OneFlow, OneForm and OneGate before 7.4
    read a top-level ``:host:`` (src/onegate/onegate-server.rb, src/*/etc/*-server.conf in
    OpenNebula/one). None when the file has neither.
    """
    server = get_path(document, (":server",))
    if isinstance(server, Mapping) and ":bind" in server:
        return (":server", ":bind")
    if isinstance(document.data, Mapping) and ":host" in document.data:
        return (":host",)
    return None


def set_listen_address(document: YamlDocument, address: str) -> tuple[str, ...] | None:
    """Point the service's bind address at ``address``; returns the key path it used."""
    path = listen_key(document)
    if path is not None:
        set_path(document, path, address)
    return path
