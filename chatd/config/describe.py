"""The effective settings as TOML: what `chatd --check-config` prints, and loads back unchanged."""

from __future__ import annotations

import json
from typing import Any

from chatd.config.settings import SETTINGS

__all__ = ["describe"]


def describe(config: Any, defaults: dict[str, str] | None = None) -> list[str]:
    """`config`'s settings as `section.key = value` lines (valid TOML, dotted keys), in file
    order. ``defaults`` names what an unset key resolves to at run time (paths that depend on
    the environment), shown as a comment."""
    defaults = defaults or {}
    lines = []
    for setting in SETTINGS:
        value = getattr(config, setting.name)
        line = f"{setting.section}.{setting.name} = {toml_value(setting.shown(setting.to_file(value)))}"
        if value is None and setting.name in defaults:
            line += f"  # default: {defaults[setting.name]}"
        lines.append(line)
    return lines


def toml_value(value: Any) -> str:
    """A TOML literal for a str, bool, int or float."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # A JSON string is a TOML basic string, except that TOML also wants DEL escaped.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
