"""IRC operators (docs/protocol.md §14): OPER onto an account named in ``irc_operators``,
and what an operator may do, KILL (disconnect a client of this node) and WALLOPS (a line to
every client of this node that set ``+w``); and INFO, which anyone may ask.

chatd's own operators work through chatctl on the admin socket; this is the IRC way for
the accounts an operator trusts with it. The password is the account's (§12), checked as a
login's is (rate limits, plaintext rule), never logged.
"""

from __future__ import annotations

from chatd import __version__
from chatd.core.closing import Close
from chatd.core.events import YouWereKicked
from chatd.irc.render import mask, wire
from chatd.text import fold, sanitize


def do_oper(reader, params: tuple) -> None:
    """``OPER NAME PASSWORD``: 381 and ``MODE nick +o``; 491 for a name that may not, 464
    for a wrong password."""
    name, password = params[0], params[1]
    client, accounts = reader.client, reader.settings.accounts
    allowed = {fold(n) for n in reader.settings.config.irc_operators}
    if accounts is None or fold(name) not in allowed:
        reader.reply("491", "No O-lines for your host")
        return
    refusal = accounts.refuse_plaintext(client.ip, client.outbox.tls is not None)
    if refusal:
        accounts.refused()
        reader.reply("464", refusal)
        return
    account, _problem = accounts.login(name, password, client.ip, reader.session.log)
    if account is None:
        reader.reply("464", "Password incorrect")
        return
    client.user_modes = client.user_modes | {"o"}
    reader.reply("381", "You are now an IRC operator")
    reader.send(f":{reader.source} MODE {client.nick} :+o")
    reader.session.log.info("irc_operator", nick=client.nick, account=account.name)


def _operator(reader) -> bool:
    if "o" in reader.client.user_modes:
        return True
    reader.reply("481", "Permission Denied- You're not an IRC operator")
    return False


def do_kill(reader, params: tuple) -> None:
    """``KILL NICK :reason``: the client (of this node) is disconnected as ``chatctl kick``
    would, its rooms told why."""
    if not _operator(reader):
        return
    target = reader.hub.find(params[0])
    if target is None:
        reader.reply("401", params[0][:30], "No such nick/channel")
        return
    reason = sanitize(params[1] if len(params) > 1 else "") or f"killed by {reader.client.nick}"
    reader.session.flusher.disconnect(target.outbox, Close("kicked", reason),
                                      YouWereKicked(reason))
    reader.session.log.info("irc_kill", nick=reader.client.nick, target=target.nick,
                            reason=reason)


def do_wallops(reader, params: tuple) -> None:
    """``WALLOPS :text`` to every client of this node with ``+w`` (the sender too)."""
    if not _operator(reader):
        return
    data = wire(f":{mask(reader.client.nick)} WALLOPS :{sanitize(params[0])}")
    for client in reader.hub.clients():
        if "w" in client.user_modes:
            reader.hub.send_data(client, data, 1)


def do_info(reader, _params: tuple) -> None:
    reader.send(reader.numeric("371", f"chatd {__version__}: a chat daemon, docs/protocol.md"),
                reader.numeric("374", "End of /INFO list"))


COMMANDS = {"OPER": do_oper, "KILL": do_kill, "WALLOPS": do_wallops, "INFO": do_info}
NEEDS = {"OPER": 2, "KILL": 1, "WALLOPS": 1}
