"""The end of an IRC registration: the account (``PASS`` or SASL PLAIN, onto SPEC §12's
accounts), the nick, and the welcome (001-005, LUSERS, the MOTD).

Passwords are checked on the session's thread under no lock (the accounts package, tens of
milliseconds), never logged or echoed; an error names the account at most.
"""

from __future__ import annotations

import time

from chatd import __version__
from chatd.core.bus import ClusterUnavailable
from chatd.core.closing import Close
from chatd.core.events import LoggedIn
from chatd.line.accounts import ignore_as_the_account
from chatd.text import fold

NO_ACCOUNTS = "accounts are not available on this server"
CLUSTER_UNAVAILABLE = "cluster unavailable, try again"
#: RPL_ISUPPORT (005): SPEC §14's tokens, and what chatd's limits are.
ISUPPORT = ("CASEMAPPING=ascii", "CHANTYPES=#", "NICKLEN=24", "CHANNELLEN=25",
            "PREFIX=(ov)@+", "CHANMODES=b,k,,imnst", "MODES=4", "TOPICLEN=300",
            "KICKLEN=300", "AWAYLEN=300", "CHANLIMIT=#:64", "MAXTARGETS=4")
_STARTED = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def log_in(reader, name: str, password: str) -> str | None:
    """``reader``'s client proves it is account ``name``: None, or why not (one line)."""
    accounts = reader.settings.accounts
    if accounts is None:
        return NO_ACCOUNTS
    client = reader.client
    refusal = accounts.refuse_plaintext(client.ip, client.outbox.tls is not None)
    if refusal:
        accounts.refused()
        return refusal
    account, problem = accounts.login(name, password, client.ip, reader.session.log)
    if account is None:
        return problem
    try:
        problem, handed = reader.hub.log_in(client, account.name, LoggedIn(account.name))
    except ClusterUnavailable:
        return CLUSTER_UNAVAILABLE
    if problem is None:
        ignore_as_the_account(reader.session, accounts, account.name)
        # where it was: a JOIN of one of those rooms replays what it missed there (§12)
        places = accounts.rooms(account.name) if handed is None else handed
        reader.places = {fold(room): since for room, since in places if since is not None}
    return problem


def log_in_first(reader, nick: str) -> bool:
    """A ``PASS`` given at registration logs in (``PASS password`` for the account ``nick``,
    or ``PASS account:password``); a closed server lets nobody further without. False: the
    client has been told why and is leaving."""
    password = reader.registration.password
    accounts = reader.settings.accounts
    if password is None:
        if accounts is not None and accounts.closed:
            return _refuse(reader, "this server needs an account: log in with SASL or PASS")
        return True
    name, colon, secret = password.partition(":")
    name, secret = (name, secret) if colon and name and secret else (nick, password)
    problem = log_in(reader, name, secret)
    return True if problem is None else _refuse(reader, problem)


def _refuse(reader, problem: str) -> bool:
    reader.reply("464", problem)
    reader.send(f"ERROR :Closing Link: {problem}")
    reader.session.quit(Close("login"))
    return False


def claim(reader, nick: str) -> str | None:
    """The nick for a registering guest: refused if an account owns it or anyone holds it."""
    accounts = reader.settings.accounts
    if accounts is not None:
        owned = accounts.registered(nick)
        if owned is None:
            return accounts.unavailable
        if owned and fold(nick) != fold(reader.client.account or ""):
            return f"nick {nick} is registered; log in with SASL or PASS"
    return reader.hub.take_nick(reader.client, nick)


def greet(reader) -> None:
    """001-005, the user counts, the MOTD (or 422)."""
    config = reader.settings.config
    server, nick = reader.protocol.server, reader.client.nick
    numeric = reader.numeric
    lines = [
        numeric("001", f"Welcome to {config.server_name}, {reader.source}"),
        numeric("002", f"Your host is {server}, running version chatd-{__version__}"),
        numeric("003", f"This server was created {_STARTED}"),
        f":{server} 004 {nick} {server} chatd-{__version__} i bikmnostv bkov",
        numeric("005", *ISUPPORT, "are supported by this server"),
        *lusers(reader),
        *motd(reader, config.motd),
    ]
    reader.send(*lines)


def lusers(reader) -> list[str]:
    """251, 255, 265 and 266: this node's clients (in cluster mode the others' are not
    counted here)."""
    count, peak = reader.hub.users()
    return [reader.numeric("251", f"There are {count} users and 0 invisible on 1 servers"),
            reader.numeric("255", f"I have {count} clients and 0 servers"),
            reader.numeric("265", str(count), str(peak),
                           f"Current local users {count}, max {peak}"),
            reader.numeric("266", str(count), str(peak),
                           f"Current global users {count}, max {peak}")]


def motd(reader, lines) -> list[str]:
    if not lines:
        return [reader.numeric("422", "MOTD File is missing")]
    server = reader.protocol.server
    return [reader.numeric("375", f"- {server} Message of the day - "),
            *(reader.numeric("372", f"- {line}") for line in lines),
            reader.numeric("376", "End of /MOTD command.")]
