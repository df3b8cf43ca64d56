"""Nobody can lock the operator out of the admin socket (issue 9, item 1).

Idle connections, a connection trickling one byte at a time, and a crowd of admin_group
members hold every ordinary slot; root (and chatd's own user) still get through, through the
slots reserved for them or by evicting the connection that has waited longest. Everyone else
is told ``busy``, which chatctl reports as "cannot be reached" (exit 3). All real: the daemon,
the socket, chatctl as a subprocess, the other users via setpriv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from support.admin import Admin
from support.paths import REPO, TRACEBACK

from chatd.admin.conversation import REQUEST_SECONDS
from chatd.admin.server import MAX_CONNECTIONS, RESERVED

#: Run as an admin_group member: hold N admin connections, one of them trickling a byte every
#: 0.9 s, report how many the daemon turned away as busy, then hold the rest until stdin closes.
HOLDER = r"""
import select, socket, sys, threading, time
path, n = sys.argv[1], int(sys.argv[2])
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    conns.append(s)

def trickle(s):
    s.sendall(b'{"cmd": "status"')
    try:
        while True:
            time.sleep(0.9)  # the misbehaving peer itself: its pace is the point
            s.sendall(b" ")
    except OSError:
        pass

threading.Thread(target=trickle, args=(conns[0],), daemon=True).start()
# every connection the daemon will not keep is answered at once: wait until that many are
busy, deadline = 0, time.monotonic() + 20
pending = list(conns[1:])
while pending and time.monotonic() < deadline:
    ready, _, _ = select.select(pending, [], [], 0.2)
    for s in ready:
        pending.remove(s)
        if b'"busy"' in s.recv(4096):
            busy += 1
    if busy >= int(sys.argv[3]):
        break
print("busy", busy, flush=True)
sys.stdin.read()
"""


def _setpriv(groups: str) -> list[str]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to act as another user")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", groups, "--"]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("CHATD_ADMIN_SOCKET", None)
    return env


def chatctl(path: str, *args: str, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    proc = subprocess.run([*prefix, sys.executable, "-m", "chatctl", "--socket", path, *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO,
                          env=_env(), timeout=60)
    assert TRACEBACK not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def group_daemon(chatd):
    """A daemon whose admin socket serves the group staff, in a directory nobody can enter."""
    base = tempfile.mkdtemp(prefix="chatd-l-")
    os.chmod(base, 0o755)
    path = os.path.join(base, "run", "admin.sock")
    srv = chatd(args=["--admin-socket", path], admin={"admin_group": "staff"})
    yield srv, path
    shutil.rmtree(base, ignore_errors=True)


def test_group_members_fill_the_socket_and_root_still_gets_through(group_daemon):
    srv, path = group_daemon
    member = _setpriv("--groups=staff")
    n = MAX_CONNECTIONS + 8
    expected_busy = n - (MAX_CONNECTIONS - RESERVED)
    holder = subprocess.Popen([*member, "/usr/bin/python3", "-c", HOLDER, path, str(n),
                               str(expected_busy)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().split() == ["busy", str(expected_busy)]
        # root: served from the reserved slots, promptly and without evicting anyone
        root = chatctl(path, "status")
        assert root.returncode == 0 and root.stdout.startswith("version:"), root
        assert chatctl(path, "--json", "list").returncode == 0
        assert not srv.find_events("admin_evicted")
        # another member: busy, which is "cannot reach" (exit 3), naming the socket
        other = chatctl(path, "status", prefix=member)
        assert (other.returncode, other.stdout) == (3, ""), other
        assert other.stderr == (f"chatctl: cannot reach chatd at {path}: busy: too many admin "
                                "connections (try again later)\n")
        srv.wait_event("admin_busy", uid=65534)
    finally:
        holder.stdin.close()
        holder.wait(20)
    # the members' connections are gone: a member is served again
    again = chatctl(path, "rooms", prefix=member)
    assert again.returncode == 0, again


def test_root_evicts_the_longest_idle_when_every_slot_is_taken(server):
    """Even root's own forgotten connections cannot lock root out."""
    idle = [Admin(server.admin_socket) for _ in range(MAX_CONNECTIONS)]
    for conn in idle:  # served in this order: each holds a slot, the first has waited longest
        assert conn.ask({"cmd": "bans"})["ok"]
    proc = chatctl(server.admin_socket, "status")
    assert proc.returncode == 0 and proc.stdout.startswith("version:"), proc
    server.wait_event("admin_evicted")
    # the evicted one was the connection idle longest: the first (served before the others)
    with pytest.raises(ConnectionError):
        idle[0].ask({"cmd": "rooms"})
    assert idle[-1].ask({"cmd": "rooms"})["ok"]


@pytest.mark.slow
def test_a_request_trickled_byte_by_byte_is_cut_off(server):
    conn = Admin(server.admin_socket, timeout=REQUEST_SECONDS + 10)
    conn.send(b'{"cmd": "status"')
    ended = server.wait_event("admin_timeout", timeout=REQUEST_SECONDS + 10, partial=True)
    assert ended["uid"] == os.getuid()
    assert conn.sock.recv(100) == b""  # closed without an answer to half a request
