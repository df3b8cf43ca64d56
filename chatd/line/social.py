"""The social commands of the line protocol (SPEC §13, docs/protocol.md §13): ``/away``,
``/back``, ``/whois``, ``/ignore``, ``/unignore`` and ``/ignores``.

Away and ignore are the client's own (core/presence.py keeps them and tells the rooms and
the cluster); nothing here waits on another client.
"""

from __future__ import annotations

from chatd.core.bus import ClusterUnavailable
from chatd.core.events import AwaySet, Back, Ignores, Ignoring
from chatd.core.ignoring import MAX_IGNORES
from chatd.text import NAME_RULE, fold, is_valid_name

#: ``/away`` without a text.
AWAY_DEFAULT = "away"


def do_away(session, text: str) -> None:
    text = text or AWAY_DEFAULT
    session.hub.set_away(session.client, text)
    session.reply(AwaySet(text))


def do_back(session, _args: str) -> None:
    if session.client.away is None:
        session.error("you are not away")
        return
    session.hub.set_away(session.client, None)
    session.reply(Back())


def do_whois(session, nick: str) -> None:
    if not is_valid_name(nick):
        session.error(f"no such nick {nick}")
        return
    try:
        found = session.hub.whois(nick)
    except ClusterUnavailable:
        session.error("cluster unavailable, try again")
        return
    if found is None:
        session.error(f"no such nick {nick}")
    else:
        session.reply(found)


def do_ignore(session, nick: str) -> None:
    """``/ignore NICK``: any valid nick, present or not (one may ignore someone who comes
    back later); not one's own."""
    client = session.client
    if not is_valid_name(nick):
        session.error(f"invalid nick {nick} ({NAME_RULE})")
        return
    if fold(nick) in (fold(client.nick), fold(client.account or "")):
        session.error("you cannot ignore yourself")
        return
    if fold(nick) in client.outbox.ignoring:
        session.error(f"you are ignoring {nick} already")
        return
    if len(client.ignores) >= MAX_IGNORES:
        session.error(f"you ignore too many nicks (at most {MAX_IGNORES})")
        return
    _keep(session, (*client.ignores, nick))
    session.reply(Ignoring(nick, True))


def do_unignore(session, nick: str) -> None:
    client = session.client
    kept = tuple(n for n in client.ignores if fold(n) != fold(nick))
    if len(kept) == len(client.ignores):
        session.error(f"you are not ignoring {nick}")
        return
    _keep(session, kept)
    session.reply(Ignoring(nick, False))


def do_ignores(session, _args: str) -> None:
    session.reply(Ignores(session.client.ignores))


def _keep(session, nicks: tuple[str, ...]) -> None:
    """The client's ignore list is ``nicks`` now, and its account's if it is logged in."""
    client = session.client
    session.hub.set_ignores(client, nicks)
    accounts = session.settings.accounts
    if client.account is not None and accounts is not None:
        accounts.keep_ignores(client.account, list(nicks))
