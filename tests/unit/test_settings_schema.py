"""The settings table is the only way a setting is read: every variable load_settings looks
at is declared once, and each declaration fills a Settings field or feeds a rule."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path

from onerun.errors import SettingsError
from onerun.settings import Settings, load_settings
from onerun.settings.schema import SETTINGS

ZONE = {"ONERUN_HA_MEMBERS": "one-0.h:2640,one-1.h:2640,one-2.h:2640",
        "ONERUN_HA_ADDRESS": "one-1.h:2640", "ONEADMIN_PASSWORD": "pw",
        "ONE_KEY": "0123456789abcdef0123456789abcdef"}


class RecordingEnviron(Mapping[str, str]):
    """An environment that remembers every name looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.asked.add(name)
        return name in self.values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("load_settings must look names up, not walk the environment")

    def __len__(self) -> int:
        return len(self.values)


def declared_names() -> set[str]:
    return {d.name for d in SETTINGS} | {f"{d.name}_FILE" for d in SETTINGS if d.secret}


def test_every_variable_read_is_declared(tmp_path: Path) -> None:
    for values in ({}, ZONE, {**ZONE, "DB_BACKEND": "mysql", "DB_HOST": "db"}):
        environ = RecordingEnviron(dict(values))
        with contextlib.suppress(SettingsError):  # refused or not, what was read counts
            load_settings(environ, root=str(tmp_path))
        assert environ.asked <= declared_names(), environ.asked - declared_names()
    everything = RecordingEnviron({**ZONE, "ONERUN_HA_LABEL_POD": "1"})
    with contextlib.suppress(SettingsError):  # the pod's Kubernetes variables are unset
        load_settings(everything)
    assert everything.asked == declared_names()  # a labelled zone reads every variable


def test_each_variable_is_declared_once_and_fills_a_real_field() -> None:
    names = [d.name for d in SETTINGS]
    assert len(names) == len(set(names))
    fields = [d.field for d in SETTINGS if d.field is not None]
    assert len(fields) == len(set(fields))
    settings_fields = {f.name for f in dataclasses.fields(Settings)}
    assert set(fields) <= settings_fields
    # Derived in load_settings: the path of ONERUN_CONFIG, the root, the HA zone.
    assert settings_fields - set(fields) == {"config_file", "root", "ha"}


def test_each_declared_default_is_the_settings_default() -> None:
    defaults = Settings()
    for d in SETTINGS:
        if d.field is not None:
            assert getattr(defaults, d.field) == d.default, d.name


def test_the_secrets_are_the_three_credentials_and_stay_masked() -> None:
    secret_fields = {d.field for d in SETTINGS if d.secret}
    assert secret_fields == {"oneadmin_password", "db_password", "one_key"}
    settings = load_settings(ZONE)
    assert all("0123456789abcdef" not in repr(getattr(settings, f)) for f in secret_fields)
