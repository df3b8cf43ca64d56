"""The admin commands on accounts (SPEC §12, docs/protocol.md §6): account_add,
account_passwd, account_disable, account_enable, account_delete, accounts, account.

The policy and the store are :class:`chatd.accounts.Accounts`'s; a handler only turns its
answers into a reply, and closes the connection of an account that is disabled or deleted
(through the flusher, never a socket write). Hashing a password takes tens of milliseconds:
it runs here, on the admin connection's thread, never under the hub lock.

Passwords: ``account_add`` and ``account_passwd`` take one, and nothing here puts it in a
reply, an error message or the log; the ``admin_command`` event leaves it out whatever
``log_messages`` says (commands.Spec.secret_args). A result never holds the hash either: it
is made by :func:`describe`, which copies the fields an operator may see.

In cluster mode the accounts are in Redis (cluster/accounts.py), shared by every node, and an
account is logged in on one connection in the whole cluster (its nick's claim says where):
``disable`` and ``delete`` close it on whichever node it is (routed ``account_off``, carried
out by :func:`account_off_here` there). :func:`reclaim_here` is the other node's side of a
login that needs a nick held here (core/identity.py ``give_up``).
"""

from __future__ import annotations

from chatd.accounts.accounts import AccountError
from chatd.admin.protocol import AdminError
from chatd.core.bus import ClusterUnavailable
from chatd.core.closing import Close
from chatd.core.events import AccountDisabled
from chatd.store.bans import iso
from chatd.text import fold

#: AccountError code -> the admin error code (docs/protocol.md §6); a bad name is a bad value.
ERROR_CODES = {
    "not_found": "not_found",
    "exists": "exists",
    "bad_password": "bad_password",
    "bad_name": "bad_args",
    "unavailable": "accounts_unavailable",
}


def do_account_add(ctx, name: str, password: str) -> dict:
    account = _ask(ctx, "add", name, password)
    return describe(account, online=_online(ctx, account.name))


def do_account_passwd(ctx, name: str, password: str) -> dict:
    """A new password; a connection already logged in stays (it proved the old one)."""
    _ask(ctx, "set_password", name, password)
    return _show(ctx, name)


def do_account_disable(ctx, name: str) -> dict:
    """Disabled first, so that no new login gets in, then its connection closed."""
    _ask(ctx, "set_disabled", name, True)
    shown = _show(ctx, name)
    return {**shown, "disconnected": _disconnect(ctx, name)}


def do_account_enable(ctx, name: str) -> dict:
    _ask(ctx, "set_disabled", name, False)
    return _show(ctx, name)


def do_account_delete(ctx, name: str) -> dict:
    """The account goes, and its connection with it: told ``*** your account was disabled``
    (what a user can do about either is the same: ask the operator)."""
    account = _ask(ctx, "get", name)
    _ask(ctx, "delete", name)
    unowned = ctx.hub.orphan_rooms(account.name)  # a new account of that name gets none
    return {"name": account.name, "deleted": True, "disconnected": _disconnect(ctx, name),
            "rooms_unregistered": unowned}


def do_accounts(ctx) -> list[dict]:
    """Every account, by name; ONLINE from one copy of the hub's clients (one hub lock, not
    one an account)."""
    accounts = _ask(ctx, "all")
    here = {fold(row.account) for row in ctx.hub.snapshot() if row.account}
    return [describe(a, online=_online(ctx, a.name, here)) for a in accounts]


def do_account(ctx, name: str) -> dict:
    return _show(ctx, name)


def describe(account, online: bool) -> dict:
    """What ``accounts`` and ``account`` show of an account: never its hash."""
    return {
        "name": account.name,
        "created": iso(account.created),
        "last_login": iso(account.last_login),
        "state": "disabled" if account.disabled else "active",
        "online": online,
    }


def _show(ctx, name: str) -> dict:
    account = _ask(ctx, "get", name)
    return describe(account, online=_online(ctx, account.name))


def _online(ctx, name: str, here: set | None = None) -> bool:
    """Logged in here (``here``: the folded accounts logged in on this node, when the caller
    has them already), or another node's client holds its nick (which only the account
    does, but for the moment its login takes it from a guest)."""
    local = fold(name) in here if here is not None else ctx.hub.by_account(name) is not None
    return local or ctx.bus.remote_nick(name) is not None


def _disconnect(ctx, name: str) -> int:
    """Close the connection logged in to ``name``, on this node or the one its nick's claim
    names; how many were closed (0 or 1: an account has one connection in the cluster)."""
    client = ctx.hub.by_account(name)
    if client is not None:
        ctx.flusher.disconnect(client.outbox, Close("disabled"), AccountDisabled())
        return 1
    try:
        found = ctx.bus.locate(name)
        return int(found is not None and ctx.bus.route(
            found[0], "account_off", found[1], {"account": name}) is True)
    except ClusterUnavailable:  # disabled all the same: no new login gets in
        return 0


def account_off_here(ctx, client_id: int, args: dict) -> bool:
    """Another node's operator disabled or deleted the account this client is logged in to."""
    client = ctx.hub.lookup(client_id)
    if client is None or fold(client.account or "") != fold(args["account"]):
        return False
    ctx.flusher.disconnect(client.outbox, Close("disabled"), AccountDisabled())
    return True


def reclaim_here(ctx, client_id: int, args: dict) -> bool:
    """Another node's login to account ``args["nick"]`` needs that nick, which this client
    holds: it gives it up (core/identity.py). If it was the account's own connection, where
    it stood is remembered before the answer goes back, so the login there rejoins from it."""
    client = ctx.hub.lookup(client_id)
    if client is None:
        return False
    given_up, positions = ctx.hub.give_up(client, args["nick"])
    if positions is not None and ctx.accounts is not None:
        ctx.accounts.remember(args["nick"], positions)
    return given_up


def _ask(ctx, method: str, *args):
    """``ctx.accounts.METHOD(*args)``, its AccountError as the admin error of the same
    meaning (the message is the one Accounts wrote: it never holds a password)."""
    accounts = ctx.accounts
    if accounts is None:
        raise AdminError("accounts_off")
    try:
        return getattr(accounts, method)(*args)
    except AccountError as exc:
        raise AdminError(ERROR_CODES.get(exc.code, "internal_error"), exc.message) from None
