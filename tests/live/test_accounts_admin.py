"""SPEC §12 "Operators", end to end: ``chatctl account …`` as a real process against a real
chatd, its effects seen by real chat clients over TCP, /metrics scraped over HTTP, and the
password looked for in everything chatd and chatctl wrote.

Logins are rate limited (5 a minute per address and per account), so no test here makes more
than 5 login attempts from one address against one chatd. The pure formats are in
tests/unit/test_chatctl_format.py, the command table's secret arguments in
tests/unit/test_admin_table.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import subprocess
import sys
import termios
import time
from datetime import datetime

import pytest
from support.admin import Admin
from support.chatctl import _env, ctl, run_chatctl
from support.client import ChatClient
from support.metrics import scrape, start, value
from support.paths import REPO, TRACEBACK

PASSWORD = "correct-Horse-4711"
UTC_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"
ACCOUNT_FIELDS = {"name", "created", "last_login", "state", "online"}


def add(srv, name: str, password: str = PASSWORD, status: int = 0, *args: str) -> str:
    """``chatctl [ARGS] account add NAME --password-stdin`` with the password piped in."""
    return ctl(srv, *args, "account", "add", name, "--password-stdin", input=password + "\n",
               status=status)


def log_in(srv, name: str, password: str = PASSWORD, **connect) -> ChatClient:
    client = srv.connect(**connect)
    client.send_line(f"/login {name} {password}")
    client.wait_for(f"*** logged in as {name}")
    client.sync()  # the rest of the login (the nick, the MOTD, ...) read
    return client


def refused_login(srv, name: str, password: str, error: str) -> None:
    client = srv.connect()
    client.send_line(f"/login {name} {password}")
    client.wait_for(f"*** error: {error}")
    client.close()


def table(text: str) -> list[dict]:
    """A chatctl table as dicts by header, cells split on the header's column starts."""
    header, *lines = text.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    return [{name: line[a:b].strip() for name, a, b in zip(names, starts, starts[1:] + [None])}
            for line in lines]


def key_values(text: str) -> dict:
    return dict(re.fullmatch(r"([a-z ]+):\s+(.*)", line).groups() for line in text.splitlines())


# -- add, list, show --------------------------------------------------------------------------


def test_add_list_show_and_last_login(server):
    assert ctl(server, "account", "list") == "NAME  CREATED  LAST-LOGIN  STATE  ONLINE\n"
    before = time.time()
    assert add(server, "alice") == "added account alice\n"
    assert add(server, "Alice", PASSWORD, 1) == "chatctl: error: account Alice exists already\n"
    error = json.loads(add(server, "alice", PASSWORD, 1, "--json"))
    assert error["error"]["code"] == "exists", error
    assert key_values(ctl(server, "account", "show", "alice")) == {
        "name": "alice", "created": key_values(ctl(server, "account", "show", "ALICE"))["created"],
        "last login": "never", "state": "active", "online": "no"}

    alice = log_in(server, "alice")
    guest = server.connect()
    [row] = table(ctl(server, "account", "list"))
    assert row["NAME"] == "alice" and row["STATE"] == "active" and row["ONLINE"] == "yes", row
    assert re.fullmatch(UTC_TIME, row["CREATED"]) and re.fullmatch(UTC_TIME, row["LAST-LOGIN"])
    [listed] = json.loads(ctl(server, "--json", "account", "list"))
    assert set(listed) == ACCOUNT_FIELDS, listed  # never the hash
    assert listed["name"] == "alice" and listed["online"] is True
    created = _epoch(listed["created"])
    assert before - 2 <= created <= _epoch(listed["last_login"]) <= time.time() + 1, listed
    shown = json.loads(ctl(server, "account", "show", "alice", "--json"))
    assert shown == listed
    assert key_values(ctl(server, "account", "show", "alice"))["online"] == "yes"

    # chatctl list: who is logged in to which account
    clients = table(ctl(server, "list"))
    assert list(clients[0]) == ["ID", "NICK", "PEER", "ROOM", "CONNECTED", "IDLE", "SENDQ",
                                "MUTED", "ACCOUNT", "PROTOCOL"]
    accounts = {c["NICK"]: c["ACCOUNT"] for c in clients}
    assert accounts == {"alice": "alice", guest.nick: "-"}, clients
    by_nick = {c["nick"]: c for c in json.loads(ctl(server, "--json", "list"))}
    assert by_nick["alice"]["account"] == "alice" and by_nick[guest.nick]["account"] is None
    assert by_nick["alice"]["id"] == server.client_id(alice)

    assert ctl(server, "account", "show", "bob", status=1) == "chatctl: error: no account bob\n"
    assert json.loads(ctl(server, "account", "show", "bob", "--json", status=1)) == \
        {"error": {"code": "not_found", "message": "no account bob"}}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_add_asks_twice_on_a_terminal_and_never_echoes(server):
    out, status = on_a_terminal(server, "account", "add", "bob",
                                answers=[(b"Password: ", PASSWORD),
                                         (b"Repeat for confirmation: ", PASSWORD)])
    assert status == 0, out
    assert PASSWORD.encode() not in out, out
    assert out.endswith(b"added account bob\r\n"), out
    log_in(server, "bob")
    # no terminal and no --password-stdin: refused, rather than a password read from anywhere
    proc = run_chatctl(server.admin_socket, "account", "passwd", "bob")
    assert proc.returncode == 2 and "use --password-stdin" in proc.stderr, proc
    # and never on the command line
    proc = run_chatctl(server.admin_socket, "account", "add", "carol", PASSWORD)
    assert proc.returncode == 2, proc
    assert ctl(server, "account", "add", "carol", "--password-stdin", status=2) \
        .endswith("Error: --password-stdin: no password on stdin\n")


def on_a_terminal(srv, *args: str, answers, timeout: float = 20.0) -> tuple[bytes, int]:
    """chatctl on a pseudo-terminal of its own (its controlling terminal, as in a login
    shell, so a hidden prompt is asked there): each answer typed once its prompt is shown.
    Returns (everything the terminal showed, the exit status)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatctl", "--socket", srv.admin_socket, *args],
        stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=_env(), start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    try:
        for prompt, answer in answers:
            while not shown.endswith(prompt):
                if not _read_some(master, shown, deadline):
                    pytest.fail(f"no prompt {prompt!r}; the terminal shows {bytes(shown)!r}")
            os.write(master, answer.encode() + b"\n")
        while _read_some(master, shown, deadline):
            pass
        status = proc.wait(max(0.1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert TRACEBACK.encode() not in shown, shown
    return bytes(shown), status


def _read_some(fd: int, into: bytearray, deadline: float) -> bool:
    """Read what the terminal shows next; False at its end (or the deadline)."""
    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    if not ready:
        return False
    try:
        data = os.read(fd, 4096)
    except OSError:  # EIO: every process on the terminal is gone
        return False
    into.extend(data)
    return bool(data)


# -- passwd, disable, enable, delete -------------------------------------------------------------


def test_passwd_then_only_the_new_password_logs_in(server):
    add(server, "carol")
    new = "staple-Battery-99"
    assert ctl(server, "account", "passwd", "carol", "--password-stdin", input=new + "\n") == \
        "changed the password of account carol\n"
    refused_login(server, "carol", PASSWORD, "login failed")
    log_in(server, "carol", new)
    assert ctl(server, "account", "passwd", "nobody", "--password-stdin", input=new,
               status=1) == "chatctl: error: no account nobody\n"
    error = json.loads(ctl(server, "--json", "account", "passwd", "carol", "--password-stdin",
                           input="short\n", status=1))
    assert error["error"]["code"] == "bad_password", error
    assert "short" not in error["error"]["message"]


def test_disable_closes_the_connection_enable_lets_it_back_delete_ends_it(server):
    add(server, "dave")
    dave = log_in(server, "dave")
    assert ctl(server, "account", "disable", "dave") == \
        "disabled account dave, disconnected 1 client\n"
    assert dave.expect_closed()[-1] == "*** your account was disabled"
    server.wait_event("client_disconnected", nick="dave", reason="account disabled")
    server.wait_event("account_disabled", account="dave")
    refused_login(server, "dave", PASSWORD, "your account is disabled")
    assert key_values(ctl(server, "account", "show", "dave"))["state"] == "disabled"
    assert table(ctl(server, "account", "list"))[0]["STATE"] == "disabled"
    result = json.loads(ctl(server, "--json", "account", "disable", "dave"))
    assert result["disconnected"] == 0 and result["state"] == "disabled", result

    assert ctl(server, "account", "enable", "dave") == "enabled account dave\n"
    dave = log_in(server, "dave")
    assert json.loads(ctl(server, "account", "delete", "dave", "--json")) == \
        {"name": "dave", "deleted": True, "disconnected": 1, "rooms_unregistered": []}
    assert dave.expect_closed()[-1] == "*** your account was disabled"
    assert ctl(server, "account", "show", "dave", status=1) == "chatctl: error: no account dave\n"
    assert ctl(server, "account", "delete", "dave", status=1) == \
        "chatctl: error: no account dave\n"
    refused_login(server, "dave", PASSWORD, "login failed")
    # the nick is anyone's again
    guest = server.connect()
    guest.set_nick("dave")


# -- a closed server ------------------------------------------------------------------------------


def test_closed_server_an_operator_lets_alice_in(chatd):
    srv = chatd(accounts={"mode": "closed"})
    stranger = ChatClient().connect(srv.port, greet=False)
    assert stranger.read_line().startswith("*** welcome to ")
    stranger.expect("*** this server needs an account: /login NICK PASSWORD")
    stranger.send_line("hello?")
    stranger.expect("*** error: login required: /login NICK PASSWORD")

    add(srv, "alice")
    add(srv, "bob")
    stranger.send_line(f"/login alice {PASSWORD}")
    stranger.wait_for("*** logged in as alice")
    alice = stranger
    bob = ChatClient().connect(srv.port, greet=False)
    bob.send_line(f"/login bob {PASSWORD}")
    bob.wait_for("*** logged in as bob")
    bob.sync()
    alice.wait_for("*** bob joined lobby")
    alice.send_line("hi bob")
    bob.expect("<alice> hi bob")
    assert {c["nick"]: c["account"] for c in json.loads(ctl(srv, "--json", "list"))} == \
        {"alice": "alice", "bob": "bob"}


# -- metrics ------------------------------------------------------------------------------


def test_metrics_count_logins_and_accounts(chatd):
    srv, port = start(chatd)
    samples = scrape(port)
    assert value(samples, "chatd_accounts") == 0
    for outcome in ("ok", "failed", "throttled", "disabled", "refused"):
        assert value(samples, "chatd_logins_total", outcome=outcome) == 0, outcome
    add(srv, "erin")
    add(srv, "frank")
    refused_login(srv, "erin", "wrong-password-1", "login failed")
    log_in(srv, "erin")
    samples = scrape(port)
    assert value(samples, "chatd_accounts") == 2
    assert value(samples, "chatd_logins_total", outcome="ok") == 1
    assert value(samples, "chatd_logins_total", outcome="failed") == 1
    ctl(srv, "account", "disable", "frank")
    refused_login(srv, "frank", PASSWORD, "your account is disabled")
    ctl(srv, "account", "delete", "erin")
    samples = scrape(port)
    assert value(samples, "chatd_logins_total", outcome="disabled") == 1
    assert value(samples, "chatd_accounts") == 1


# -- the password is nowhere ------------------------------------------------------------------


def test_the_password_is_never_logged_nor_watched(chatd, watching):
    """Every log level and log_messages on, a human and a JSON watch: an add, a passwd, a
    refused add, a failed and a good login, and none of the passwords appears anywhere."""
    srv = chatd(logging={"log_level": "debug", "log_messages": True})
    human, as_json = watching(srv), watching(srv, "--json")
    first, second, third = "first-Secret-4711", "second-Secret-0815", "third-Secret-2222"
    outputs = [add(srv, "gina", first), ctl(srv, "account", "passwd", "gina", "--password-stdin",
                                            input=second + "\n")]
    outputs.append(add(srv, "gina", third, 1))  # exists: the error path is logged too
    admin = Admin(srv.admin_socket)
    try:
        reply = admin.ask({"cmd": "account_add", "args": {"name": "no such name",
                                                          "password": third}})
        outputs.append(json.dumps(reply))
        assert reply["error"]["code"] == "bad_args", reply
    finally:
        admin.close()
    refused_login(srv, "gina", first, "login failed")
    gina = log_in(srv, "gina", second)
    gina.send_line("the chat goes on")
    gina.sync()
    as_json.wait_event("login_ok", account="gina")
    human.wait_line("login_ok", "account=gina")
    srv.wait_event("message", text="the chat goes on")  # log_messages is on indeed
    as_json.wait_event("admin_command", command="account_passwd")
    human.wait_line("admin_command", "command=account_add", "gina")
    seen = "\n".join([srv.stderr_text(), *srv.stdout, *human.lines, *as_json.lines, *outputs])
    for password in (first, second, third):
        assert password not in seen, password
    # and what was looked at holds these commands, their other arguments included
    added = srv.find_events("admin_command", command="account_add", outcome="ok")
    assert [event["args"] for event in added] == [{"name": "gina"}], added
    assert as_json.wait_event("admin_command", command="account_passwd")["args"] == \
        {"name": "gina"}
