"""The Prometheus endpoint's configuration (docs/protocol.md §11) and the shipped Prometheus
files: the metrics keys in --check-config and reload, a port in use at start, metrics off by
default and kept through daemonising, and etc/prometheus checked by promtool against what a
live chatd exports (the scrapes themselves: test_metrics.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from support.admin import Admin
from support.metrics import free_port, get, scrape, start, value
from support.paths import REPO

PROMETHEUS_DIR = REPO / "etc" / "prometheus"


# -- configuration and start-up ------------------------------------------------------------


def run_chatd(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "chatd", *args], capture_output=True, text=True,
                          timeout=30, env=env, stdin=subprocess.DEVNULL)


def test_check_config_shows_and_validates_the_metrics_keys(tmp_path):
    result = run_chatd("--check-config")
    assert result.returncode == 0, result.stderr
    assert 'metrics.metrics_host = "127.0.0.1"' in result.stdout.splitlines()
    assert "metrics.metrics_port = 0" in result.stdout.splitlines()
    for text, key, rule in (
        ("metrics_port = 70000", "metrics.metrics_port", "between 0 and 65535"),
        ("metrics_port = true", "metrics.metrics_port", "between 0 and 65535"),
        ('metrics_host = ""', "metrics.metrics_host", "non-empty"),
        ("metrics_port = 5555", "metrics.metrics_port", "same as server.port (5555)"),
        ("metrics_everything = 1", "metrics.metrics_everything", "unknown key"),
        ('metrics_port = 9555\nmetrics_host = "a..b"', "metrics.metrics_host", "cannot resolve"),
    ):
        path = tmp_path / "m.toml"
        path.write_text(f"[metrics]\n{text}\n")
        result = run_chatd("-c", str(path), "--check-config")
        assert result.returncode == 2, (text, result.stdout, result.stderr)
        line = result.stderr.strip()
        assert "\n" not in line and line.startswith(f"chatd: error: {key}: ") and rule in line, line


def test_a_metrics_port_in_use_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        path = tmp_path / "m.toml"
        path.write_text(f"[metrics]\nmetrics_port = {port}\n")
        result = run_chatd("-c", str(path), "--port", "0", "--state-dir", str(tmp_path / "s"),
                           "--admin-socket", str(tmp_path / "a.sock"), "--log-format", "json")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (f"chatd: error: cannot listen on 127.0.0.1:{port} "
                                     "(metrics): Address already in use")
    assert not (tmp_path / "a.sock").exists()  # what was set up before is let go


def test_metrics_are_off_by_default(chatd):
    srv = chatd()
    srv.connect().close()
    srv.wait_event("client_disconnected")
    assert not srv.find_events("metrics_listening")
    assert "chatd.metrics" not in srv.stderr_text()


def test_a_daemon_serves_metrics_after_detaching(daemon_paths):  # noqa: F811
    """The endpoint's socket survives python-daemon closing every other descriptor."""
    port = free_port()
    config = daemon_paths.pidfile.parent / "m.toml"
    config.write_text(f"[metrics]\nmetrics_port = {port}\n")
    result = daemon_paths.launch("-c", str(config))
    assert result.returncode == 0, result.stderr
    assert value(scrape(port), "chatd_clients") == 0
    events = [e["event"] for e in daemon_paths.events()]
    assert events.index("metrics_listening") == events.index("listening") + 1
    pid = daemon_paths.pid()
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_reload_names_the_metrics_keys_it_cannot_apply(chatd):
    srv, port = start(chatd)
    moved = free_port()
    srv.config_path.write_text(f"[metrics]\nmetrics_port = {moved}\n")
    admin = Admin(srv.admin_socket)
    result = admin.result("reload")
    admin.close()
    assert result["restart_required"] == ["metrics.metrics_port"]
    assert get(port)[0] == 200  # still where it was bound


# -- the shipped Prometheus files ----------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package prometheus; make tools installs it)")
    return path


def test_shipped_scrape_config_and_rules_pass_promtool():
    tool = promtool()
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "chatd-rules.yml")):
        result = subprocess.run([tool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "SUCCESS" in result.stdout + result.stderr


def test_the_rules_use_only_families_chatd_exports(chatd):
    srv, port = start(chatd)
    exported = {name for name, _ in scrape(port)}
    used = set(re.findall(r"\bchatd_[a-z_]+", (PROMETHEUS_DIR / "chatd-rules.yml").read_text()))
    used -= {"chatd_cluster_link_up", "chatd_cluster_rejected_total"}  # cluster mode only:
    # test_cluster_link_and_node_count
    assert used and used <= exported, used - exported
