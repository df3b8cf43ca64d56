"""Accounts from the chat side (docs/protocol.md §12): /register, /login, /logout, /password
and a first line PASS, over plain TCP and TLS; nick ownership; the plaintext rule from a
non-loopback address; closed mode; login attempts slowed; an upgrade keeps logins; no
password in any log line. (Operators' `chatctl account`: test_accounts_admin.py; what an
account missed: test_accounts_missed.py.)

The non-loopback address is this machine's own address on its network interface (found with
``ip``): a connection from it to chatd bound on it has that address as its peer, not a
loopback one. The login windows allow 5 attempts a minute per address and per account, so a
test makes at most 5 logins from 127.0.0.1 unless the limit is what it tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from support.chatctl import ctl
from support.client import ChatClient
from test_nc import Netcat
from test_tls import make_cert, tls_client

PASSWORD = "correct-horse-1"  # every test password holds "horse" (support/paths.SECRET_MARK)
OTHER = "battery-horse-2"


def no_secrets(server) -> None:
    """No line chatd wrote (any level) contains a test password."""
    leaked = [line for line in server.lines + server.stdout if "horse" in line]
    assert not leaked, leaked


def answer(line: str) -> bool:
    """An answer to /login (not a notice about someone else)."""
    return line.startswith(("*** error: ", "*** logged in as "))


def register(client: ChatClient, nick: str, password: str = PASSWORD) -> None:
    """``client`` takes ``nick`` and registers it (the others' notices are theirs to read)."""
    if client.nick != nick:
        client.set_nick(nick)
    client.send_line(f"/register {password}")
    client.expect(f"*** registered {nick}")


def alice_and_bob(server) -> tuple[ChatClient, ChatClient]:
    """Two clients in the lobby: alice registered and logged in, bob told of her rename."""
    alice, bob = server.connect_many(2)
    register(alice, "alice")
    bob.wait_for("*** guest-1 is now known as alice")
    return alice, bob


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not a loopback one, or None."""
    if shutil.which("ip") is None:
        return None
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=False).stdout
    found = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    return found[0] if found else None


# -- register, log in, log out, change the password ------------------------------------------


def test_register_logout_login_and_password(chatd):
    server = chatd()
    alice, bob = server.connect_many(2)
    old = alice.nick
    register(alice, "alice")
    bob.expect(f"*** {old} is now known as alice")
    alice.send_line("/logout")
    guest = alice.wait_for(lambda line: line.startswith("*** logged out; you are now guest-"))
    new_nick = guest.rsplit(" ", 1)[1]
    bob.expect(f"*** alice is now known as {new_nick}")
    alice.send_line(f"/login alice {PASSWORD}")
    alice.expect("*** logged in as alice")
    bob.expect(f"*** {new_nick} is now known as alice")
    alice.send_line(f"/password {PASSWORD} {OTHER}")
    alice.expect("*** password changed")
    alice.send_line("hello as alice")
    bob.expect("<alice> hello as alice")
    server.wait_event("account_registered", account="alice")
    assert "client_id" in server.wait_event("login_ok", account="alice")  # who, for watch
    no_secrets(server)


def test_register_refusals(chatd):
    server = chatd()
    a = server.connect()
    a.send_line(f"/register {PASSWORD}")
    a.expect("*** error: a guest nick cannot be registered; /nick NAME first")
    a.set_nick("alice")
    for bad in ("short", "x" * 257):
        a.send_line(f"/register {bad}")
        a.expect("*** error: passwords are 8-256 bytes, with no spaces")
    a.send_line("/register")
    a.expect("*** error: usage: /register PASSWORD")
    register(a, "alice")
    a.send_line(f"/register {OTHER}")
    a.expect("*** error: you are logged in as alice already")
    a.send_line("/logout")
    a.wait_for(lambda line: line.startswith("*** logged out"))
    a.send_line("/logout")
    a.expect("*** error: you are not logged in")
    a.send_line(f"/password {PASSWORD} {OTHER}")
    a.expect("*** error: you are not logged in")
    no_secrets(server)


def test_unknown_account_and_wrong_password_get_the_same_answer(chatd):
    server = chatd()
    a, b = alice_and_bob(server)
    b.send_line(f"/login alice {OTHER}")
    b.expect("*** error: login failed")
    b.send_line(f"/login nobody {OTHER}")
    b.expect("*** error: login failed")
    b.send_line(f"/login not/a/name {OTHER}")
    b.expect("*** error: login failed")
    event = server.wait_event("login_failed")
    assert event["account"] == "alice" and event["peer_ip"] == "127.0.0.1"
    no_secrets(server)


def test_a_registered_nick_cannot_be_taken(chatd):
    server = chatd()
    alice, bob = server.connect_many(2)
    register(alice, "alice")
    alice.close()
    bob.wait_for("*** alice left lobby (connection closed)")
    for spelling in ("alice", "ALICE"):
        bob.send_line(f"/nick {spelling}")
        bob.expect(f"*** error: nick {spelling} is registered; /login {spelling} PASSWORD")
    bob.send_line(f"/login {PASSWORD}")  # the current nick's account: there is none
    bob.expect("*** error: login failed")
    bob.send_line(f"/login alice {PASSWORD}")
    bob.expect("*** logged in as alice")


def test_the_accounts_older_connection_is_closed(chatd):
    server = chatd()
    first, second, watcher = server.connect_many(3)
    old = first.nick
    register(first, "alice")
    watcher.expect(f"*** {old} is now known as alice")
    second.send_line(f"/login alice {PASSWORD}")
    second.wait_for("*** logged in as alice")
    assert first.expect_closed()[-1] == "*** logged in elsewhere"
    watcher.expect("*** alice left lobby (logged in elsewhere)")
    watcher.expect(f"*** {second.nick} is now known as alice")
    second.send_line("still here")
    watcher.expect("<alice> still here")


def test_a_first_line_pass_logs_in(chatd):
    server = chatd()
    a, b = server.connect_many(2)
    register(a, "alice")
    a.close()
    b.wait_for("*** alice left lobby (connection closed)")
    c = ChatClient().connect(server.port, greet=False)
    server.clients.append(c)
    c.send_line(f"PASS alice:{PASSWORD}")
    c.wait_for("*** logged in as alice")
    b.wait_for(lambda line: line.endswith("is now known as alice"))
    c.send_line("hi")
    b.expect("<alice> hi")
    d = ChatClient().connect(server.port, greet=False)
    server.clients.append(d)
    d.send_line("PASS nonsense")
    d.wait_for("*** error: usage: PASS NICK:PASSWORD (as the first line)")
    no_secrets(server)


# -- where a password may travel ----------------------------------------------------------------


def test_plaintext_is_refused_off_loopback_and_accepted_over_tls(chatd, tmp_path):
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    cert, key = make_cert(tmp_path, "acct")
    server = chatd(server={"host": address}, tls={"tls_cert": str(cert), "tls_key": str(key)},
                   args=["--tls-port", "0"])
    tls_port = server.wait_event("listening")["tls_port"]
    server.tls_port = tls_port
    local = server.connect(host=address)  # chatd listens on `address` only
    assert local.sock.getpeername()[0] == address
    local.set_nick("alice")
    local.send_line(f"/register {PASSWORD}")
    local.expect(f"*** error: passwords need an encrypted connection (TLS port {tls_port})")
    secure = tls_client_at(server, address)
    register(secure, "carol")
    local.wait_for("*** guest-2 is now known as carol")
    local.send_line(f"/login carol {PASSWORD}")
    local.expect(f"*** error: passwords need an encrypted connection (TLS port {tls_port})")
    no_secrets(server)


def tls_client_at(server, address: str):
    """A TLS chat client of ``server`` connecting to ``address``."""
    import socket
    import ssl

    from test_tls import TlsChatClient

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = TlsChatClient()
    raw = socket.create_connection((address, server.tls_port), timeout=5)
    client.sock = context.wrap_socket(raw, server_hostname="localhost")
    client.read_greeting()
    server.clients.append(client)
    return client


@pytest.mark.parametrize("rule, loopback_ok", [("deny", False), ("allow", True),
                                               ("local", True)])
def test_plaintext_rules_on_loopback(chatd, tmp_path, rule, loopback_ok):
    cert, key = make_cert(tmp_path, "acct")
    server = chatd(accounts={"plaintext_passwords": rule},
                   tls={"tls_cert": str(cert), "tls_key": str(key)}, args=["--tls-port", "0"])
    server.tls_port = server.wait_event("listening")["tls_port"]
    plain = server.connect()
    plain.set_nick("alice")
    plain.send_line(f"/register {PASSWORD}")
    if loopback_ok:
        plain.expect("*** registered alice")
    else:
        plain.expect("*** error: passwords need an encrypted connection "
                     f"(TLS port {server.tls_port})")
        register(tls_client(server), "carol")


# -- closed servers --------------------------------------------------------------------------


def test_closed_server_lets_in_only_accounts(chatd, tmp_path):
    state = str(tmp_path / "state")
    opened = chatd(args=["--state-dir", state])
    a = opened.connect()
    register(a, "alice")
    opened.terminate()
    server = chatd(accounts={"mode": "closed", "login_timeout": 2.0},
                   args=["--state-dir", state])
    pending = ChatClient().connect(server.port, greet=False)
    server.clients.append(pending)
    assert pending.read_line() == "*** welcome to chatd"
    pending.expect("*** this server needs an account: /login NICK PASSWORD")
    for line in ("hello", "/nick bob", "/who", "/join games"):
        pending.send_line(line)
        pending.expect("*** error: login required: /login NICK PASSWORD")
    pending.send_line(f"/login alice {PASSWORD}")
    pending.expect("*** logged in as alice")
    pending.expect("*** you are alice")
    pending.expect("*** Type /help for the list of commands.")
    pending.expect("*** you joined lobby (1 member)")  # where alice was when the server stopped
    late = ChatClient().connect(server.port, greet=False)
    server.clients.append(late)
    late.expect("*** welcome to chatd")
    late.expect("*** this server needs an account: /login NICK PASSWORD")
    assert late.expect_closed() == ["*** error: login required"]
    pending.send_line("/who")
    pending.expect("*** in lobby: alice")
    pending.send_line("/logout")
    pending.expect("*** bye")
    pending.expect_closed()
    no_secrets(server)


# -- attempts slowed ---------------------------------------------------------------------------


def test_login_attempts_are_slowed_per_address_and_per_account(chatd):
    server = chatd(limits={"rate": 2000, "burst": 2000})
    owner, attacker, bystander, listener = server.connect_many(4)
    register(owner, "alice")
    owner.close()
    attacker.wait_for("*** alice left lobby (connection closed)")
    attacker.send_raw("".join(f"/login alice wrong-{n:04d}\n" for n in range(1000)).encode())
    answers = [attacker.read_line(timeout=30) for _ in range(1000)]
    assert answers[:5] == ["*** error: login failed"] * 5
    assert all(re.fullmatch(r"\*\*\* error: too many login attempts, wait \d+ s", a)
               for a in answers[5:]), answers[5:8]
    attacker.send_line("/login bob wrong-horse-4")  # another account: the address is slowed
    assert attacker.read_line().startswith("*** error: too many login attempts, wait ")
    bystander.send_line("the chat goes on")  # nobody else is slowed
    listener.wait_for("<" + bystander.nick + "> the chat goes on")
    # 32 other addresses: each may try, but the account allows 5 a minute in all
    others = [server.connect(source=f"127.0.0.{n}") for n in range(2, 34)]
    for client in others:
        client.send_line(f"/login alice {OTHER}")
    replies = [client.wait_for(answer, timeout=30) for client in others]
    assert all(r.startswith("*** error: too many login attempts, wait ") for r in replies), replies
    # the wait named is the account's window, what is left of its minute (the right password
    # working once it has passed is test_accounts_parts' five-a-minute test, on a clock of its
    # own: here it would hold CI for a minute)
    wait = int(replies[-1].split("wait ")[1].split(" ")[0])
    assert 0 < wait <= 60
    failed = server.find_events("login_failed")
    assert len(failed) == 1 and failed[0]["count"] == 1  # one line per address per 10 s
    no_secrets(server)


# -- an upgrade keeps logins -----------------------------------------------------------------


def test_an_upgrade_keeps_logins(chatd):
    server = chatd()
    alice, bob = alice_and_bob(server)
    out = ctl(server, "upgrade", timeout=60)
    assert "upgraded" in out
    alice.send_line(f"/register {OTHER}")
    alice.expect("*** error: you are logged in as alice already")
    bob.send_line(f"/login alice {PASSWORD}")  # the account's connection is known: closed
    bob.wait_for("*** logged in as alice")
    assert alice.expect_closed()[-1] == "*** logged in elsewhere"
    no_secrets(server)


def test_no_password_in_the_log_even_with_log_messages_and_debug(chatd):
    server = chatd(logging={"log_messages": True, "log_level": "debug"})
    a, b = alice_and_bob(server)
    a.send_line(f"/password {PASSWORD} {OTHER}")
    a.expect("*** password changed")
    b.send_line("/login alice wrong-horse-3")
    b.expect("*** error: login failed")
    c = ChatClient().connect(server.port, greet=False)
    server.clients.append(c)
    c.send_line(f"PASS alice:{OTHER}")
    c.wait_for("*** logged in as alice")
    a.expect_closed()
    c.send_line("a chat line is logged")
    server.wait_event("message", text="a chat line is logged")
    no_secrets(server)


# -- the owner takes its nick back; real nc; TLS ------------------------------------------------


def test_the_owners_login_renames_the_guest_holding_its_nick(chatd):
    """A guest took ``carol`` before an operator made the account: carol's login renames it."""
    server = chatd()
    ghost, watcher, owner = server.connect_many(3)
    ghost.set_nick("carol")
    ctl(server, "account", "add", "carol", "--password-stdin", input=PASSWORD + "\n")
    owner.send_line(f"/login carol {PASSWORD}")
    owner.wait_for("*** logged in as carol")
    renamed = ghost.wait_for(lambda line: line.startswith("*** you are now guest-"))
    guest = re.fullmatch(r"\*\*\* you are now (guest-\d+) \(carol logged in\)", renamed).group(1)
    watcher.wait_for(f"*** carol is now known as {guest}")
    watcher.wait_for(f"*** {owner.nick} is now known as carol")
    ghost.send_line("/nick carol")
    ghost.wait_for("*** error: nick carol is registered; /login carol PASSWORD")
    owner.send_line("mine again")
    watcher.wait_for("<carol> mine again")
    no_secrets(server)


@pytest.fixture
def nc_at():
    """``nc 127.0.0.1 PORT`` processes (test_nc.Netcat), killed at teardown."""
    if shutil.which("nc") is None:
        pytest.skip("nc not found: install the Debian package netcat-openbsd")
    started = []

    def start(port: int) -> Netcat:
        started.append(Netcat(port))
        return started[-1]

    yield start
    for nc in started:
        if nc.proc.poll() is None:
            nc.proc.kill()
        nc.proc.wait(10)


def test_register_and_login_through_real_nc(chatd, nc_at):
    server = chatd()
    first = nc_at(server.port)
    for line in ("*** welcome to chatd", "*** you are guest-1",
                 "*** Type /help for the list of commands."):
        first.expect(line)
    first.type("/nick erin")
    first.expect("*** you are now erin")
    first.type(f"/register {PASSWORD}")
    first.expect("*** registered erin")
    first.type("/quit")
    first.expect("*** bye")
    assert first.close() == 0
    second = nc_at(server.port)
    second.type(f"PASS erin:{PASSWORD}")
    for line in ("*** welcome to chatd", "*** you are guest-2",
                 "*** Type /help for the list of commands.", "*** logged in as erin"):
        second.expect(line)
    second.type(f"/password {PASSWORD} {OTHER}")
    second.expect("*** password changed")
    second.type("/logout")
    second.expect("*** logged out; you are now guest-3")
    second.type("/quit")
    second.expect("*** bye")
    assert second.close() == 0
    no_secrets(server)


def test_login_and_password_over_tls(chatd, tmp_path):
    cert, key = make_cert(tmp_path, "acct")
    server = chatd(accounts={"plaintext_passwords": "deny"},
                   tls={"tls_cert": str(cert), "tls_key": str(key)}, args=["--tls-port", "0"])
    server.tls_port = server.wait_event("listening")["tls_port"]
    first = tls_client(server)
    register(first, "frank")
    first.close()
    second = tls_client(server)
    second.send_line(f"/login frank {PASSWORD}")
    second.expect("*** logged in as frank")
    second.send_line(f"/password {PASSWORD} {OTHER}")
    second.expect("*** password changed")
    second.send_line("/logout")
    second.wait_for(lambda line: line.startswith("*** logged out; you are now guest-"))
    no_secrets(server)
