"""Being social (SPEC §13): away, ignore and ``/whois`` (a mixin of :class:`~chatd.core.hub.Hub`).

Away and ignore are a client's own state, written by its session thread: ``client.away``, and
``client.ignores`` with its folded set on the outbox (``Outbox.ignoring``), which the
deliverers read (core/ignoring.py says how a room applies it). A change of either is told to
the rooms and the cluster under the hub lock, so it is seen in step with membership changes:
a room's set of ignoring readers never keeps an outbox that has left it.

A private line passes through :meth:`deliver_private` on the recipient's node, wherever it
was sent from: that is where its ignore list is, and where its away text is answered from.
"""

from __future__ import annotations

import time

from chatd.core.bus import ClusterUnavailable
from chatd.core.events import AwayNoticed, IsAway, PrivateMessage, WhoIs
from chatd.core.ignoring import hides_private
from chatd.text import fold


class Presence:
    """Over the hub's ``_lock``, ``_bus`` and ``send_to``/``find``."""

    def set_away(self, client, text: str | None) -> None:
        """``/away TEXT`` (``text``) or ``/back`` (None); other nodes see it in the client's
        member record."""
        with self._lock:
            client.away = text
            self._bus.member(client)
            self._bus.away(client.nick, text)
            self._tell_away(client.nick, text, client.rooms, client)

    def away_changed(self, nick: str, text: str | None, rooms) -> None:
        """Another node's ``nick``, a member of the rooms named ``rooms``, went away or came
        back (the bus's reader)."""
        with self._lock:
            self._tell_away(nick, text, [room for room in map(self._rooms.get, map(fold, rooms))
                                         if room is not None], None)

    def _tell_away(self, nick: str, text: str | None, rooms, subject) -> None:
        """Tell the members of ``rooms`` but ``subject`` whose protocol follows it that
        ``nick`` is away (``text``) or back (None); once each however many rooms they share
        (hub lock held). O(members) a change: an /away is one line of its client's input,
        paced like any other (flood control)."""
        event, told = AwayNoticed(nick, text), set()
        for room in rooms:
            for member in room.members.values():
                if member is not subject and member.outbox.protocol.follows_away \
                        and member.id not in told:
                    told.add(member.id)
                    self.send_to(member, event)

    def set_ignores(self, client, nicks: tuple[str, ...]) -> None:
        """``client`` ignores ``nicks`` from now on (its whole list, replaced)."""
        with self._lock:
            client.ignores = nicks
            client.outbox.ignoring = frozenset(fold(n) for n in nicks)
            for room in client.rooms:
                room.ignoring_changed(client.outbox)

    def deliver_private(self, target, event):
        """A private ``event`` for ``target``, a client of this node, unless it ignores the
        sender. Returns what the sender is to be told of a /msg to an away target
        (events.IsAway), or None: the caller tells it after its receipt."""
        if not hides_private(target.outbox.ignoring, event):
            self.send_to(target, event)
        away = target.away
        if away is not None and event.__class__ is PrivateMessage:
            return IsAway(target.nick, away)
        return None

    def names_elsewhere(self, nicks: list[str]) -> dict:
        """folded nick -> (user name, real name) of those of ``nicks`` that are another
        node's IRC clients (``WHO #room``; ``""`` each for a line client), as their member
        records say; {} when the cluster cannot be asked (they show as their nicks then)."""
        try:
            found = self._bus.describe_many(nicks)
        except ClusterUnavailable:
            return {}
        return {key: (member.username, member.realname) for key, member in found.items()}

    def whois(self, nick: str) -> WhoIs | None:
        """``/whois NICK``: what this node knows of it, or its member record if it is on
        another node (no idle time then); None if nobody holds it. Raises
        bus.ClusterUnavailable when the cluster cannot be asked."""
        target = self.find(nick)
        if target is not None:
            with self._lock:
                rooms = tuple(room.name for room in target.rooms)
            return WhoIs(target.nick, target.account, rooms,
                         int(time.monotonic() - target.last_active), target.away, "",
                         target.username, target.realname)
        found = self._bus.describe(nick)
        if found is None:
            return None
        node, member = found
        return WhoIs(member.nick, member.account, member.rooms, None, member.away, node,
                     member.username, member.realname)
