"""The `Config` value: one immutable record of every setting, its fields made from SETTINGS.

Immutable because reload builds a whole new Config and swaps it in: a thread that was handed
one keeps a consistent view of it.
"""

from __future__ import annotations

import dataclasses
import os

from chatd.config.describe import describe
from chatd.config.settings import SETTINGS

__all__ = ["Config", "default_state_dir"]

_FIELDS = [(setting.name, setting.type, dataclasses.field(default=setting.default))
           for setting in SETTINGS]
_EXTRA = [
    ("config_path", "str | None", dataclasses.field(default=None)),
    # The CLI options given at start, as (field, value) pairs, so that reload() can re-apply
    # them on top of the re-read file. Not part of the settings: excluded from ==, hash, repr.
    ("cli_overrides", "tuple[tuple[str, Any], ...]",
     dataclasses.field(default=(), compare=False, repr=False)),
]

Config = dataclasses.make_dataclass(
    "Config", _FIELDS + _EXTRA, frozen=True,
    namespace={"describe": describe,
               "__doc__": "The effective settings. Build it with `load()`; never mutate (use "
                          "`dataclasses.replace`). `describe()` gives them as TOML lines."},
)
Config.__module__ = __name__  # make_dataclass takes a module= only from Python 3.12


def default_state_dir(env=None) -> str:
    """Where bans persist when ``state_dir`` is unset (docs/protocol.md §4): systemd's StateDirectory=,
    else $XDG_STATE_HOME/chatd, else ~/.local/state/chatd."""
    env = os.environ if env is None else env
    if env.get("STATE_DIRECTORY"):
        return env["STATE_DIRECTORY"].split(":")[0]  # systemd may pass several; ours is first
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "chatd")
