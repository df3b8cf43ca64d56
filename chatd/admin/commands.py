"""The admin commands (docs/protocol.md §6) as a table: name -> handler and what the admin
connection needs to know of it.

Arguments arrive already checked against ``adminproto.COMMANDS`` (names and types), so a handler
only checks meaning (does the client exist, is the address valid). A handler takes the
:class:`AdminContext` and those arguments and returns a JSON-able result, or raises
:class:`~chatd.admin.protocol.AdminError`; one marked ``follows`` returns (result, follow-up):
what its connection does once the reply is sent. A follow-up has ``run(conn, peer_log)`` and
``abandon()`` (the reply could not be sent): :class:`~chatd.admin.control.Then` runs a call
(the shutdown, an upgrade's end), :class:`~chatd.admin.watch.Subscription` streams events.

Handlers run on an admin connection thread; they reach the chat side only through the hub (its
lock), the flusher (queued work) and the ban list, never a client socket. What they may use of
the daemon is :class:`AdminContext`, built by the service, not the service itself:

    hub               Hub: snapshot(), rooms(), stats(), lookup(), clients(), broadcast(),
                      send_to() (queued lines, never a socket write)
    flusher           Flusher: disconnect() (queued)
    bans              BanList: add(), remove(), active()
    config()          the Config in force now (a reload swaps it)
    reload(timeout)   run the reload on the main thread, as SIGHUP does, and wait for it:
                      (ok, message, restart_required keys); TimeoutError if it did not finish
    request_shutdown  queue a shutdown for the main thread (called after the reply is sent)
    upgrade(timeout, store)  have the main thread hand over to a new chatd (upgrade.py), or
                      with ``store`` to systemd's fd store (fdstore.py), and wait:
                      (ok, result or reason, call once the reply is sent)
    accounts          chatd.accounts.Accounts (None: a hub run without them, accounts_off)
    facts()           what status reports about the process: started_at, host, port,
                      admin_socket
    watchers          the ``watch`` subscriptions (watch.py): the admin server ends them
                      when it stops or pauses
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatd.admin import accounts, actions, control, queries, rooms
from chatd.admin.watch import Watchers, do_watch


@dataclass(frozen=True)
class AdminContext:
    """The narrow view of the daemon that admin commands get (see the module docstring)."""

    hub: Any
    flusher: Any
    bans: Any
    config: Callable[[], Any]
    reload: Callable[[float], tuple[bool, str, list[str]]]
    request_shutdown: Callable[[], None]
    facts: Callable[[], dict]
    bus: Any  # bus.py: the other nodes (LocalBus on a single node: there are none)
    upgrade: Callable[[float, bool], tuple] = None
    history: Any = None  # history.History: room tails (None or lines = 0: history is off)
    accounts: Any = None  # chatd.accounts.Accounts; None: no accounts (a hub run without them)
    watchers: Watchers = field(default_factory=Watchers)


@dataclass(frozen=True)
class Spec:
    """One command: its handler and the facts its admin connection needs."""

    handler: Callable[..., Any]
    #: The handler returns (result, follow-up to run once the reply is sent).
    follows: bool = False
    #: Its connection and request id are recorded (conversation.ASKING) while it runs: an
    #: upgrade in place execs, and the new image answers that connection (reexec.py).
    asks: bool = False
    #: Arguments that are chat content: logged only with log_messages, like chat messages.
    chat_args: tuple[str, ...] = ()
    #: Arguments that are secrets (passwords): never logged, whatever log_messages says, so
    #: never in the log nor in ``chatctl watch`` (which taps the log).
    secret_args: tuple[str, ...] = ()


#: Every command of ``adminproto.COMMANDS``, by name.
TABLE: dict[str, Spec] = {
    "status": Spec(queries.do_status),
    "list": Spec(queries.do_list),
    "nodes": Spec(queries.do_nodes),
    "rooms": Spec(queries.do_rooms),
    "bans": Spec(queries.do_bans),
    "history": Spec(queries.do_history),
    "purge": Spec(queries.do_purge),
    "kick": Spec(actions.do_kick),
    "mute": Spec(actions.do_mute),
    "unmute": Spec(actions.do_unmute),
    "broadcast": Spec(actions.do_broadcast, chat_args=("text",)),
    "ban": Spec(actions.do_ban),
    "unban": Spec(actions.do_unban),
    "reload": Spec(control.do_reload),
    "shutdown": Spec(control.do_shutdown, follows=True),
    "upgrade": Spec(control.do_upgrade, follows=True, asks=True),
    "handover": Spec(control.do_handover, follows=True, asks=True),
    "watch": Spec(do_watch, follows=True),
    "account_add": Spec(accounts.do_account_add, secret_args=("password",)),
    "account_passwd": Spec(accounts.do_account_passwd, secret_args=("password",)),
    "account_disable": Spec(accounts.do_account_disable),
    "account_enable": Spec(accounts.do_account_enable),
    "account_delete": Spec(accounts.do_account_delete),
    "accounts": Spec(accounts.do_accounts),
    "account": Spec(accounts.do_account),
    "room_show": Spec(rooms.do_room_show),
    "room_op": Spec(rooms.do_room_op),
    "room_deop": Spec(rooms.do_room_deop),
    "room_topic": Spec(rooms.do_room_topic, chat_args=("text",)),
    "room_mode": Spec(rooms.do_room_mode, secret_args=("key",)),
    "room_delete": Spec(rooms.do_room_delete),
}


class AdminCommands:
    """The commands bound to one daemon's context: what the admin server runs requests
    through, and the bus hands other nodes' actions to (:meth:`carry_out`)."""

    def __init__(self, ctx: AdminContext) -> None:
        self.ctx = ctx

    @property
    def log_messages(self) -> bool:
        return self.ctx.config().log_messages

    @property
    def watchers(self) -> Watchers:
        return self.ctx.watchers

    def run(self, cmd: str, args: dict):
        """Returns (result, follow-up to run once the reply is sent, or None)."""
        spec = TABLE[cmd]
        answer = spec.handler(self.ctx, **args)
        return answer if spec.follows else (answer, None)

    def loggable(self, cmd: str, args: dict) -> dict:
        """``args`` as the ``admin_command`` event may show them: without secrets ever, and
        without chat content unless log_messages is on."""
        spec = TABLE[cmd]
        hidden = set(spec.secret_args)
        if spec.chat_args and not self.log_messages:
            hidden.update(spec.chat_args)
        if not hidden:
            return args
        return {k: v for k, v in args.items() if k not in hidden}

    def carry_out(self, action: str, client_id: int | None, args: dict):
        """This node's part of an admin action (actions.carry_out); the bus calls it for
        another node's admin."""
        return actions.carry_out(self.ctx, action, client_id, args)
