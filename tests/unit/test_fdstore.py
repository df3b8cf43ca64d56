"""The pure parts of the systemd fd store support: names, LISTEN_FDNAMES, the unit's name, the
job type chatctl systemd-stop reads. The store itself is exercised by a real systemd in
tests/e2e/test_systemd_e2e.py (restart, kill -9)."""

from __future__ import annotations

import os
import subprocess
import sys

from chatctl.systemd import job_type
from chatd.lifecycle import fdstore
from chatd.lifecycle.systemd import passed_fds, unit_name


def test_names_split_socket_activation_from_the_store():
    passed = [("chatd.socket", 3), ("listen", 4), ("client-7", 5), ("state-99-2", 6),
              ("metrics", 7), ("unknown", 8)]
    activation, stored = fdstore.split(passed)
    assert activation == [3, 8]
    assert stored == {"listen": 4, "client-7": 5, "state-99-2": 6, "metrics": 7}
    assert fdstore.client_name(7) == "client-7"


def test_store_size_reads_fdstore_strictly():
    assert fdstore.store_size({"FDSTORE": "65536"}) == 65536
    for value in ("", "0", "-1", "\u00b2", "12x"):
        assert fdstore.store_size({"FDSTORE": value}) == 0, value
    assert fdstore.store_size({}) == 0


def _passed_in_child(names: str | None) -> str:
    """passed_fds() in a child that systemd-style got one descriptor as fd 3."""
    code = ("import os; from chatd.lifecycle.systemd import passed_fds; "
            "print(passed_fds(), sorted(k for k in os.environ if k.startswith('LISTEN_')))")
    env = dict(os.environ, LISTEN_FDS="1")
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    proc = subprocess.run(["sh", "-c", 'LISTEN_PID=$$ exec "$0" -c "$1" 3</dev/null',
                           sys.executable, code], env=env, capture_output=True, text=True,
                          timeout=30, check=True)
    return proc.stdout.strip()


def test_passed_fds_names_each_descriptor_and_clears_the_environment():
    assert _passed_in_child("state-1-1") == "[('state-1-1', 3)] []"
    assert _passed_in_child(None) == "[('unknown', 3)] []"  # as sd_listen_fds_with_names
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "x"}
    assert passed_fds(env) == []  # another process's
    assert env == {}


def test_unit_name_from_cgroup_v1_and_v2(tmp_path):
    v2 = tmp_path / "v2"
    v2.write_text("0::/system.slice/chatd.service\n")
    assert unit_name(str(v2)) == "chatd.service"
    v1 = tmp_path / "v1"
    v1.write_text("12:pids:/system.slice/chatd.service\n1:name=systemd:/system.slice/chatd.service\n")
    assert unit_name(str(v1)) == "chatd.service"
    user = tmp_path / "user"
    user.write_text("0::/user.slice/user-0.slice/session-1.scope\n")
    assert unit_name(str(user)) is None
    assert unit_name(str(tmp_path / "missing")) is None


def test_job_type_reads_list_jobs():
    listing = ("41 chatd.service restart running\n"
               "42 other.service stop waiting\n")
    assert job_type(listing, "chatd.service") == "restart"
    assert job_type(listing, "other.service") == "stop"
    assert job_type(listing, "missing.service") is None
    assert job_type("", "chatd.service") is None
