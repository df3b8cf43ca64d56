"""Loading: defaults, then the TOML file, then CLI options, every value checked; and reload.

Loading is a pure function that returns a complete Config or raises ConfigError naming the
bad key, so a reload can build a whole new config and keep the old one on failure. Its only
I/O is reading the TOML file; `reload()` also runs the preflight checks a reload applies.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any

from chatd.config.errors import ConfigError, Invalid
from chatd.config.model import Config
from chatd.config.preflight import check_reload
from chatd.config.rules import RULES
from chatd.config.settings import SECTIONS, SETTING

__all__ = ["load", "reload"]


def load(path: str | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file at `path` (if any), then `overrides` (CLI options, keyed by
    Config field name; None values mean "not given" and are skipped). Every value is validated,
    whatever its source. Raises ConfigError."""
    given = tuple((key, value) for key, value in (overrides or {}).items() if value is not None)
    for key, _ in given:
        if key not in SETTING:
            raise ConfigError(key, "unknown setting")
    raw = _file_settings(_read_toml(path)) if path is not None else {}
    raw.update(given)
    values = {key: _checked(key, value) for key, value in raw.items()}
    config = Config(
        **values,
        config_path=os.path.abspath(path) if path is not None else None,
        cli_overrides=given,
    )
    for rule in RULES:
        rule(config)
    return config


def reload(config: Config) -> Config:
    """A new Config from `config`'s file, re-read now, with the same CLI overrides on top,
    preflight-checked for what a reload applies (the TLS files; preflight.py): the one step
    here that looks beyond the TOML file. Raises ConfigError; the caller keeps `config`."""
    new = load(config.config_path, dict(config.cli_overrides))
    check_reload(new)
    return new


def _checked(key: str, value: Any) -> Any:
    """The field value for `key`, or ConfigError naming `section.key` and the offending value."""
    setting = SETTING[key]
    try:
        return setting.check(value)
    except Invalid as err:
        shown = setting.shown(value)
        raise ConfigError(f"{setting.section}.{key}", f"{err} (got {shown!r})") from None


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as err:
        raise ConfigError(path, f"cannot read: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(path, f"invalid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(path, f"invalid TOML: not UTF-8 ({err.reason} at byte {err.start})") from None


def _file_settings(document: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten `{section: {key: value}}` into `{key: value}`, refusing anything unknown."""
    settings: dict[str, Any] = {}
    for section, table in document.items():
        if section not in SECTIONS:
            raise ConfigError(section, "unknown section (expected one of: " + ", ".join(SECTIONS) + ")")
        if not isinstance(table, dict):
            raise ConfigError(section, f"must be a table [{section}] (got {table!r})")
        for key, value in table.items():
            if key not in SECTIONS[section]:
                raise ConfigError(
                    f"{section}.{key}",
                    f"unknown key (expected one of: {', '.join(SECTIONS[section])})",
                )
            settings[key] = value
    return settings
