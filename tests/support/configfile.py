"""A chatd configuration file for a test: ``write`` puts TOML text in a file and returns its
path; ``SETTING_FIELDS`` are the fields of Config that are settings; for test_config*.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from chatd.config import Config

SETTING_FIELDS = [f.name for f in dataclasses.fields(Config) if f.name not in ("config_path", "cli_overrides")]


def write(tmp_path: Path, text: str, name: str = "chatd.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)
