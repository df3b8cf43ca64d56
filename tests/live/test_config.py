"""Tests for chatd.config (table tests): defaults and the schema, valid and invalid values,
overrides and reload, in process. The chatd CLI's config handling (real subprocesses):
test_config_chatd.py."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from support.configfile import SETTING_FIELDS, write

from chatd.config import SECTIONS, Config, ConfigError, load, reload

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "etc" / "chatd.toml"


# --- defaults and the schema ------------------------------------------------------------------

def test_defaults_without_file():
    config = load(None, {})
    assert config == Config()
    assert config.config_path is None
    assert config.motd == ("Type /help for the list of commands.",)
    assert config.log_format is None and config.log_file is None


def test_sections_cover_exactly_the_setting_fields():
    keys = [key for keys in SECTIONS.values() for key in keys]
    assert sorted(keys) == sorted(SETTING_FIELDS)


def test_config_is_frozen_and_overrides_do_not_affect_equality():
    config = load(None, {"port": 6000})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    assert config == dataclasses.replace(Config(), port=6000)
    assert "cli_overrides" not in repr(config)
    hash(config)


def test_shipped_file_lists_every_key_with_its_default():
    document = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    in_file = {key for table in document.values() for key in table}
    assert in_file == set(SETTING_FIELDS)
    config = load(str(SHIPPED), {})
    assert dataclasses.replace(config, config_path=None) == Config()


def test_readme_table_names_every_key_in_its_section():
    """The README's settings table is where a newcomer looks first (issue 23 found it six keys
    short): every section and key of the shipped file is in it, on its section's row."""
    document = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r"^\| `\[(\w+)\]` \| (.*) \|$", (REPO / "README.md").read_text(), re.MULTILINE)}
    missing = [f"{section}.{key}" for section, table in document.items() for key in table
               if f"`{key}`" not in rows.get(section, "")]
    assert not missing, missing


def test_readme_module_table_names_every_module():
    """The README's module table is the map a newcomer reads the code by (issue 23 found seven
    modules missing from it): every module of chatd/ and chatctl/ has a row, and a module of a wing
    of chatd/ (a package: core, line, cluster, ...) or of chat/ is named in its package's row."""
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([\w/.]+)` \| (.*) \|$", readme, re.MULTILINE))
    wings = [p.parent.relative_to(REPO).as_posix() for p in sorted(REPO.glob("chatd/*/__init__.py"))]
    missing = []
    for package in ("chatd", "chatctl", "chat", *wings):
        for path in sorted((REPO / package).glob("*.py")):
            if path.name in ("__init__.py", "__main__.py"):
                continue
            if package not in ("chatd", "chatctl"):  # one row per package, naming its modules
                if f"`{path.stem}`" not in rows.get(f"{package}/", ""):
                    missing.append(f"{package}/{path.name}")
            elif f"{package}/{path.name}" not in rows:
                missing.append(f"{package}/{path.name}")
    assert not missing, missing


def test_describe_round_trips_through_load(tmp_path):
    config = load(None, {"port": 0, "log_format": "console", "log_file": str(tmp_path / "x.log")})
    config = dataclasses.replace(config, motd=("line one", "", "\tline \"three\""), rate=0.5)
    path = write(tmp_path, "\n".join(config.describe()) + "\n", "described.toml")
    assert load(path, {}) == dataclasses.replace(config, config_path=path)


# --- valid values -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "toml, field, expected",
    [
        ('[server]\nhost = "0.0.0.0"', "host", "0.0.0.0"),
        ("[server]\nport = 0", "port", 0),
        ("[server]\nport = 65535", "port", 65535),
        ('[server]\nserver_name = "my chat"', "server_name", "my chat"),
        ('[server]\nmotd = ""', "motd", ()),
        ('[server]\nmotd = """\nHello\n\nbye\n"""', "motd", ("Hello", "", "bye")),
        ("[limits]\nmax_clients = 1", "max_clients", 1),
        ("[limits]\nmax_clients_per_ip = 1", "max_clients_per_ip", 1),
        ("[limits]\nsendq_bytes = 1024", "sendq_bytes", 1024),
        ("[limits]\nrecvq_bytes = 1024", "recvq_bytes", 1024),
        ("[limits]\nrate = 2", "rate", 2.0),
        ("[limits]\nrate = 0.25", "rate", 0.25),
        ("[limits]\nburst = 1", "burst", 1),
        ("[limits]\nidle_timeout = 0", "idle_timeout", 0.0),
        ("[limits]\nidle_timeout = 300", "idle_timeout", 300.0),
        ("[limits]\nmax_line_bytes = 64", "max_line_bytes", 64),
        ("[limits]\nmax_line_bytes = 1048576\nrecvq_bytes = 1048576", "max_line_bytes", 1048576),
        ("[logging]\nlog_messages = true", "log_messages", True),
        ('[logging]\nlog_format = "json"', "log_format", "json"),
        ('[logging]\nlog_format = "console"', "log_format", "console"),
        ('[logging]\nlog_format = "auto"', "log_format", None),
        ('[logging]\nlog_level = "debug"', "log_level", "debug"),
        ('[logging]\nlog_level = "WARNING"', "log_level", "warning"),
        ('[logging]\nlog_file = ""', "log_file", None),
        ('[logging]\nlog_file = "/var/log/chatd.log"', "log_file", "/var/log/chatd.log"),
    ],
)
def test_valid_values(tmp_path, toml, field, expected):
    config = load(write(tmp_path, toml), {})
    value = getattr(config, field)
    assert value == expected and type(value) is type(expected)


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, '[logging]\nlog_file = "logs/chatd.log"')
    config = load("chatd.toml", {})
    assert config.config_path == str(tmp_path / "chatd.toml")
    assert config.log_file == str(tmp_path / "logs" / "chatd.log")


# --- invalid values: every rule, named by its dotted key --------------------------------------

@pytest.mark.parametrize(
    "toml, key, fragment",
    [
        ('[server]\nhost = ""', "server.host", "non-empty string"),
        ("[server]\nhost = 127", "server.host", "non-empty string"),
        ("[server]\nport = -1", "server.port", "between 0 and 65535"),
        ("[server]\nport = 65536", "server.port", "between 0 and 65535"),
        ('[server]\nport = "5555"', "server.port", "integer"),
        ("[server]\nport = true", "server.port", "integer"),
        ("[server]\nport = 5555.0", "server.port", "integer"),
        ('[server]\nserver_name = ""', "server.server_name", "1-64 printable"),
        (f'[server]\nserver_name = "{"x" * 65}"', "server.server_name", "1-64 printable"),
        ('[server]\nserver_name = "bad\\u001b[31m"', "server.server_name", "printable"),
        ("[server]\nmotd = 1", "server.motd", "must be a string"),
        ('[server]\nmotd = ["a"]', "server.motd", "must be a string"),
        ('[server]\nmotd = "hi\\u001b[2J"', "server.motd", "control characters"),
        ("[limits]\nmax_clients = 0", "limits.max_clients", ">= 1"),
        ("[limits]\nmax_clients = true", "limits.max_clients", "integer"),
        ("[limits]\nmax_clients_per_ip = 0", "limits.max_clients_per_ip", ">= 1"),
        ("[limits]\nsendq_bytes = 1023", "limits.sendq_bytes", ">= 1024"),
        ("[limits]\nrecvq_bytes = 0", "limits.recvq_bytes", ">= 1"),
        ("[limits]\nrecvq_bytes = 1023", "limits.recvq_bytes", "max_line_bytes"),
        ("[limits]\nmax_line_bytes = 100000", "limits.recvq_bytes", ">= max_line_bytes (100000)"),
        ("[limits]\nrate = 0", "limits.rate", "number > 0"),
        ("[limits]\nrate = -1.5", "limits.rate", "number > 0"),
        ('[limits]\nrate = "x"', "limits.rate", "number > 0"),
        ("[limits]\nrate = true", "limits.rate", "number > 0"),
        ("[limits]\nrate = inf", "limits.rate", "number > 0"),
        ("[limits]\nrate = nan", "limits.rate", "number > 0"),
        ("[limits]\nburst = 0", "limits.burst", ">= 1"),
        ("[limits]\nburst = 2.5", "limits.burst", "integer"),
        ("[limits]\nidle_timeout = -1", "limits.idle_timeout", "number >= 0"),
        ('[limits]\nidle_timeout = "10"', "limits.idle_timeout", "number >= 0"),
        ("[limits]\nmax_line_bytes = 63", "limits.max_line_bytes", "between 64 and 1048576"),
        ("[limits]\nmax_line_bytes = 1048577", "limits.max_line_bytes", "between 64 and 1048576"),
        ('[logging]\nlog_messages = "yes"', "logging.log_messages", "true or false"),
        ("[logging]\nlog_messages = 1", "logging.log_messages", "true or false"),
        ('[logging]\nlog_format = "xml"', "logging.log_format", "one of: json, console, auto"),
        ('[logging]\nlog_level = "trace"', "logging.log_level", "one of: debug, info, warning, error"),
        ("[logging]\nlog_level = 10", "logging.log_level", "one of"),
        ("[logging]\nlog_file = false", "logging.log_file", "must be a path"),
        ('[server]\nhostname = "x"', "server.hostname", "unknown key"),
        ("[limits]\nmax_client = 5", "limits.max_client", "unknown key"),
        ("[logging]\nport = 5555", "logging.port", "unknown key"),
        ("[network]\nport = 5555", "network", "unknown section"),
        ("port = 5555", "port", "unknown section"),
        ('server = "x"', "server", "must be a table"),
    ],
)
def test_invalid_values(tmp_path, toml, key, fragment):
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, toml), {})
    err = info.value
    assert err.key == key
    assert fragment in err.message
    assert str(err).startswith(f"{key}: ")
    assert "\n" not in str(err)


def test_error_message_shape(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, '[limits]\nrate = "x"'), {})
    assert str(info.value) == "limits.rate: must be a number > 0 (got 'x')"


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, '[server]\nhost = "a"\nport = = 5\n')
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert info.value.key == path
    assert "invalid TOML" in str(info.value) and "line 3" in str(info.value)
    assert "\n" not in str(info.value)


def test_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nserver_name = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load(str(path), {})
    assert info.value.key == str(path)


@pytest.mark.parametrize("make_path", [lambda tmp: tmp / "missing.toml", lambda tmp: tmp])
def test_unreadable_file_is_a_config_error(tmp_path, make_path):
    path = str(make_path(tmp_path))
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert info.value.key == path
    assert "cannot read" in str(info.value)


# --- overrides (CLI options) ------------------------------------------------------------------

def test_overrides_win_over_the_file(tmp_path):
    path = write(tmp_path, '[server]\nhost = "0.0.0.0"\nport = 7000\n[logging]\nlog_level = "debug"')
    config = load(path, {"port": 0, "log_level": "error"})
    assert (config.host, config.port, config.log_level) == ("0.0.0.0", 0, "error")


def test_none_overrides_are_ignored(tmp_path):
    path = write(tmp_path, "[server]\nport = 7000")
    config = load(path, {"port": None, "host": None, "log_file": None})
    assert config.port == 7000 and config.host == "127.0.0.1"
    assert config.cli_overrides == ()


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"port": 70000}, "server.port"),
        ({"port": True}, "server.port"),
        ({"host": ""}, "server.host"),
        ({"log_level": "loud"}, "logging.log_level"),
        ({"log_format": "xml"}, "logging.log_format"),
        ({"max_line_bytes": 100000}, "limits.recvq_bytes"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_overrides_are_validated_like_the_file(overrides, key):
    with pytest.raises(ConfigError) as info:
        load(None, overrides)
    assert info.value.key == key


# --- reload -----------------------------------------------------------------------------------

def test_reload_rereads_the_file_and_keeps_overrides(tmp_path):
    path = write(tmp_path, "[server]\nport = 7000\n[limits]\nrate = 1.0")
    first = load(path, {"port": 0, "host": "::1"})
    assert (first.port, first.host, first.rate) == (0, "::1", 1.0)
    write(tmp_path, '[server]\nport = 7001\nhost = "0.0.0.0"\nmotd = "new"\n[limits]\nrate = 9')
    second = reload(first)
    assert (second.port, second.host, second.rate, second.motd) == (0, "::1", 9.0, ("new",))
    assert second.cli_overrides == first.cli_overrides
    assert reload(second) == second


def test_reload_of_a_broken_file_raises_and_leaves_the_old_config(tmp_path):
    path = write(tmp_path, "[limits]\nburst = 3")
    first = load(path, {})
    write(tmp_path, "[limits]\nburst = 0")
    with pytest.raises(ConfigError) as info:
        reload(first)
    assert info.value.key == "limits.burst"
    assert first.burst == 3


def test_reload_without_a_file_keeps_overrides():
    config = load(None, {"port": 1234})
    assert reload(config) == config and reload(config).port == 1234
