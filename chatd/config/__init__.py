"""chatd configuration: one immutable `Config` value, built from defaults, a TOML file and CLI options.

Callers use `load()`, `reload()`, `Config.describe()` and `ConfigError`. The service thread owns
the current `Config` and replaces it; every other thread only reads the value it was handed.

The TOML file has eight sections, `[server]`, `[limits]`, `[logging]`, `[admin]`, `[tls]`,
`[cluster]`, `[history]` and `[metrics]` (see `etc/chatd.toml`); unknown sections and keys are
errors, because a typo that is silently ignored is a limit that silently does not apply.

Modules: `settings` (the SETTINGS table every other part is made from), `checks` (one value),
`rules` (between values), `model` (the Config record), `describe` (Config as TOML), `load`
(load, reload), `preflight` (checks that need the filesystem or DNS), `errors`.
"""

from chatd.config.errors import ConfigError
from chatd.config.load import load, reload
from chatd.config.model import Config, default_state_dir
from chatd.config.rules import MOTD_MAX_BYTES, MOTD_SENDQ_SHARE
from chatd.config.settings import LOG_FORMATS, LOG_LEVELS, SECTIONS, SETTINGS

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "MOTD_MAX_BYTES", "MOTD_SENDQ_SHARE", "SECTIONS",
           "SETTINGS", "Config", "ConfigError", "default_state_dir", "load", "reload"]
