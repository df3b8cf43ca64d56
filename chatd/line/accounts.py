"""The account commands of the line protocol (docs/protocol.md §12): ``/register``,
``/login``, ``/logout``, ``/password``, and a first line ``PASS NICK:PASSWORD``.

Each checks what it can from the line itself, asks the accounts package (the password's
check, tens of milliseconds, on this session's thread and under no lock), then has the hub
change who the connection is (core/identity.py). A password is never logged, echoed, or put
in an error line; an error names the account at most.
"""

from __future__ import annotations

from chatd.core.bus import ClusterUnavailable
from chatd.core.closing import Close
from chatd.core.events import Bye, LoggedIn, PasswordChanged, Registered
from chatd.core.ignoring import MAX_IGNORES
from chatd.line.parse import split_word
from chatd.text import fold

NO_ACCOUNTS = "accounts are not available on this server"
#: What a connection of a closed server may do before it logs in (SPEC §12).
BEFORE_LOGIN = frozenset({"login", "help", "quit"})
LOGIN_FIRST = "login required: /login NICK PASSWORD"


def _accounts(session):
    """The accounts, or None after telling the client there are none."""
    accounts = session.settings.accounts
    if accounts is None:
        session.error(NO_ACCOUNTS)
    return accounts


def _may_send_password(session, accounts) -> bool:
    """False (and the client told why) if this connection may not carry a password."""
    client = session.client
    refusal = accounts.refuse_plaintext(client.ip, client.outbox.tls is not None)
    if refusal:
        accounts.refused()
        session.error(refusal)
        return False
    return True


def do_register(session, password: str) -> None:
    accounts = _accounts(session)
    if accounts is None or not _may_send_password(session, accounts):
        return
    client = session.client
    if client.account is not None:
        session.error(f"you are logged in as {client.account} already")
        return
    nick = client.nick
    problem = accounts.register(nick, password, client.ip, session.log)
    if problem is None:
        problem, _ = _become(session, nick, Registered(nick))
    if problem:
        session.error(problem)


def do_login(session, args: str) -> None:
    """``/login NICK PASSWORD``, or ``/login PASSWORD`` for the current nick."""
    name, password = split_word(args)
    if not password:
        name, password = session.client.nick, name
    log_in(session, name, password)


def pass_line(session, text: str) -> None:
    """A first line ``PASS NICK:PASSWORD`` (what IRC-style clients send first)."""
    name, colon, password = text[5:].strip().partition(":")
    if not colon or not name or not password:
        session.error("usage: PASS NICK:PASSWORD (as the first line)")
        return
    log_in(session, name, password)


def log_in(session, name: str, password: str) -> None:
    accounts = _accounts(session)
    if accounts is None or not _may_send_password(session, accounts):
        return
    client = session.client
    if client.account is not None and fold(client.account) == fold(name):
        session.error(f"you are logged in as {client.account} already")
        return
    account, problem = accounts.login(name, password, client.ip, session.log)
    if account is not None:
        greeting = session.client.outbox.protocol.greeting(session.settings.config)[1:]
        problem, handed = _become(session, account.name, LoggedIn(account.name), greeting)
        if problem is None:  # back where it was, with what it missed (§12); read after the
            # login, which another node's older connection remembered its rooms before
            ignore_as_the_account(session, accounts, account.name)
            session.hub.rejoin(client, accounts.rooms(account.name) if handed is None else handed)
            accounts.here(account.name, [room.name for room in client.rooms])
    if problem:
        session.error(problem)


def ignore_as_the_account(session, accounts, name: str) -> None:
    """A login: the connection ignores whom the account ignores (SPEC §13), and whom it
    ignored as a guest, which the account keeps from now on. Before the rejoin, so what it
    missed comes without them."""
    kept = accounts.ignores(name)
    client = session.client
    known = {fold(n) for n in kept}
    merged = (*kept, *(n for n in client.ignores if fold(n) not in known))[:MAX_IGNORES]
    if merged != client.ignores:
        session.hub.set_ignores(client, merged)
    if len(merged) > len(kept):
        accounts.keep_ignores(name, list(merged))


def _become(session, name: str, notice, greeting=()) -> tuple:
    """The hub's part of a login: the connection takes the account's nick. -> (an error
    text or None, the older connection's positions or None)."""
    try:
        return session.hub.log_in(session.client, name, notice, greeting)
    except ClusterUnavailable:
        return "cluster unavailable, try again", None


def do_logout(session, _args: str) -> None:
    accounts = _accounts(session)
    if accounts is None:
        return
    if session.client.account is None:
        session.error("you are not logged in")
        return
    if accounts.closed:  # only accounts chat here: logging out is leaving
        session.reply(Bye())
        session.quit(Close("logout"))
        return
    account = session.client.account
    out = session.hub.log_out(session.client)
    if out is None:
        session.error("cluster unavailable, try again")
    else:
        accounts.remember(account, out[1])


def do_password(session, args: str) -> None:
    """``/password OLD NEW``."""
    old, new = split_word(args)
    if not new:
        session.error("usage: /password OLD NEW")
        return
    accounts = _accounts(session)
    if accounts is None or not _may_send_password(session, accounts):
        return
    client = session.client
    if client.account is None:
        session.error("you are not logged in")
        return
    problem = accounts.change_password(client.account, old, new, client.ip, session.log)
    if problem:
        session.error(problem)
    else:
        session.reply(PasswordChanged())
