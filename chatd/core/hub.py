"""Shared chat state: who is connected, their nicks, the rooms and who is in them (who is in
which room is membership.py's part of the hub; the counts and listings census.py's). What
arrives from other nodes comes in through the ``receive_*`` methods (the bus's reader).

One object, one lock. Every method that reads or changes the maps below takes ``_lock``, and the
notices that belong to a change (``joined``, ``left``, ``is now known as``, the joiner's own
reply) are queued while it is held, so every client sees changes in the order they happened.
Queuing is an append to a list (rooms.py, flusher.py); **no socket I/O ever happens under these
locks**, so a slow or dead client cannot stall anyone who needs the hub.

Lock order: ``Hub._lock -> Room.lock -> Flusher._lock`` (and ``Hub._lock -> Publisher._lock,
Roster._lock``, ``Room.lock -> Publisher._lock`` in cluster mode), never the reverse; chat
messages, the hot path, take only ``Room.lock`` (:meth:`Hub.say`). docs/DEVELOPING.md lists
every lock in chatd.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque

from chatd.core import once
from chatd.core.bus import ClusterUnavailable, LocalBus
from chatd.core.census import MAX_GONE, Census
from chatd.core.events import (
    Joined,
    Left,
    NickChanged,
    NickRevoked,
    NickUnchanged,
    Quit,
    Renamed,
    YouAre,
)
from chatd.core.identity import Identity
from chatd.core.ignoring import unhidden
from chatd.core.membership import Membership
from chatd.core.presence import Presence
from chatd.core.rooms import send_private
from chatd.core.roomstate import RoomState
from chatd.core.stewardship import Stewardship
from chatd.core.tail import fit
from chatd.text import fold

LOBBY = "lobby"


class Hub(Census, Membership, Identity, Presence, Stewardship):
    def __init__(self, flusher, bus=None) -> None:
        """``bus`` carries what crosses nodes (bus.py); the default is a single node. Room
        history is off until :meth:`use_history` (the service, once its store is open)."""
        self._flusher = flusher
        self._history = None  # history.History
        self._bus = bus or LocalBus()
        #: A chat line's publication, made under its room's lock (Room.post): None on a
        #: single node, where there is nobody to tell.
        self._publish_line = None if isinstance(self._bus, LocalBus) else self._bus.publish
        self._lock = threading.Lock()
        self._clients: dict = {}  # client id -> Client
        self._nicks: dict = {}  # folded nick -> Client
        self._accounts: dict = {}  # folded account name -> its one Client (identity.py)
        self._rooms: dict = {}  # folded room name -> Room
        self._per_ip: dict = {}  # ip -> number of clients
        self._guest_numbers = itertools.count(1)
        # input of clients that have left, so status can report lifetime totals (their output
        # is the flusher's closed_* counters: it may still drain after they leave)
        self._departed = {"lines_in": 0, "bytes_in": 0}
        #: Connections ended, by closing.Close kind: counted in remove(), under the lock it
        #: already takes, so the hot path pays nothing; read by the metrics (counters()).
        self._disconnects: dict[str, int] = {}
        #: Messages of clients that have left (their per-client counts, client.py), like
        #: ``_departed``; a dict of its own so that stats() (chatctl status) stays as it was.
        self._departed_messages = {"room": 0, "private": 0}
        #: (nick, user name, real name, when) of the clients that left, newest first, at
        #: most census.MAX_GONE (WHOWAS); hub lock.
        self._gone: deque = deque(maxlen=MAX_GONE)
        self._peak = 0  # the most users (clients with a nick) at once (IRC's LUSERS); hub lock
        #: folded room name -> (name, RoomState): rooms' states as kept or as the cluster
        #: said, for rooms not made here yet (stewardship.py); hub lock.
        self._shared: dict = {}
        self._lobby = self._room(LOBBY)

    # -- admission and lifetime ---------------------------------------------------------------

    def admit(self, client, max_clients: int, max_per_ip: int) -> str | None:
        """Count ``client`` in, or return why it is refused (docs/protocol.md §3's error)."""
        with self._lock:
            if len(self._clients) >= max_clients:
                return "server full"
            if self._per_ip.get(client.ip, 0) >= max_per_ip:
                return "too many connections from your address"
            self._clients[client.id] = client
            self._per_ip[client.ip] = self._per_ip.get(client.ip, 0) + 1
        return None

    def register(self, client, greeting: list) -> str:
        """Give ``client`` a guest nick, queue its greeting (the welcome, then ``YouAre``, then
        the rest of ``greeting``: the MOTD), put it in the lobby. Raises bus.ClusterUnavailable
        when the cluster cannot hand out a nick."""
        nick = self._guest_nick(client)
        with self._lock:
            client.nick = nick
            self._note_users()
            events = [greeting[0], YouAre(nick), *greeting[1:]]
            self._enter(client, self._lobby, (client.outbox.protocol.lines(events), len(events)))
        return nick

    def remove(self, client, reason=None) -> None:
        """Forget ``client``; tell its room why it went (``reason``, a closing.Close; None or a
        reason without a farewell: say nothing)."""
        with self._lock:
            if not self._forget(client, reason):
                return
        if client.nick:
            self._bus.release(client.nick, client)

    def _forget(self, client, reason) -> bool:
        """:meth:`remove` under the hub lock (also a login's older connection, identity.py):
        False if ``client`` was gone already."""
        if self._clients.pop(client.id, None) is None:
            return False
        left = self._per_ip[client.ip] - 1
        if left:
            self._per_ip[client.ip] = left
        else:
            del self._per_ip[client.ip]
        if client.nick and self._nicks.get(fold(client.nick)) is client:
            del self._nicks[fold(client.nick)]
        if client.account and self._accounts.get(fold(client.account)) is client:
            del self._accounts[fold(client.account)]
        self._count_departure(client, reason)
        # before its farewells: another node that shows its quit finds its member record
        # gone and its departure in WHOWAS (the publisher sends in the order queued)
        self._bus.gone(client)
        positions, rooms = [], client.rooms
        for room, before in zip(rooms, once.befores([room.name for room in rooms])):
            positions.append((room.name, self._leave(client, room)))
            self._farewell(client, room, reason, before)
        client.positions = positions  # what its account remembers (identity.py)
        return True

    def _farewell(self, client, room, reason, before: str | None) -> None:
        """Why ``client`` left (hub lock held): told to ``room`` if the reason has a farewell;
        other nodes' members hear of every departure, shutdown included. ``before``: the
        rooms it was said in first (once.py)."""
        if reason is None:
            self._bus.publish(room.name, Left(client.nick, room.name, None, client.account))
            return
        farewell = reason.farewell(client.nick, room.name, before)
        if farewell is not None:
            room.post(once.author(room, None, farewell, self._rooms), farewell)
        self._bus.publish(room.name,
                          farewell or Quit(client.nick, room.name, reason.text, before))

    def _guest_nick(self, client) -> str:
        """A free ``guest-N``, held in ``_nicks`` (and claimed on the bus) for ``client``."""
        while True:
            number = self._bus.guest_number() or next(self._guest_numbers)
            nick = f"guest-{number}"
            with self._lock:
                if fold(nick) in self._nicks:
                    continue
                self._nicks[fold(nick)] = client
            try:
                claimed = self._bus.claim(nick, client)
            except ClusterUnavailable:
                claimed = None
            if claimed:
                return nick
            with self._lock:  # not ours after all: taken elsewhere, or the cluster cannot say
                del self._nicks[fold(nick)]
            if claimed is None:
                raise ClusterUnavailable(nick)

    # -- commands -----------------------------------------------------------------------------

    def rename(self, client, new: str) -> str | None:
        """Change the nick; returns an error text or None. The reply and notice are queued.
        The new nick is claimed on the bus first, outside the lock (it may ask the cluster);
        raises bus.ClusterUnavailable if it cannot."""
        old = client.nick  # only this client's session thread changes it
        if new == old:
            self.send_to(client, NickUnchanged(new))
            return None
        in_use = f"nick {new} is already in use"
        other_key = fold(new) != fold(old)  # not just another spelling of our own
        if other_key and (self.find(new) is not None or not self._bus.claim(new, client)):
            return in_use
        with self._lock:
            owner = self._nicks.get(fold(new))
            taken = owner is not None and owner is not client
            revoked = client.nick != old  # the cluster gave ``old`` away meanwhile (revoke_nick)
            if not taken and not revoked:
                del self._nicks[fold(old)]
                self._nicks[fold(new)] = client
                client.nick = new
                self.send_to(client, NickChanged(new))
                self._post_about(client, lambda before: Renamed(old, new, before,
                                                                client.account))
                self._bus.member(client)
        if other_key:
            self._bus.release(new if taken or revoked else old, client)
        if revoked:
            return f"your nick is now {client.nick}; try again"
        return in_use if taken else None

    def revoke_nick(self, client_id: int, old: str, new: str, reaped: bool) -> bool:
        """Cluster mode (the bus's publisher thread): ``old`` belongs to a client on another node
        now, taken while this node was cut off; our client becomes ``new`` (a guest nick the bus
        has claimed). Its room here sees it renamed; the other nodes, which saw it leave if
        they ``reaped`` this node, see it join as ``new``, or else renamed. False: the client
        is gone or changed its nick meanwhile (nothing to do)."""
        with self._lock:
            client = self._clients.get(client_id)
            if client is None or client.nick != old or client.room is None:
                return False
            if self._nicks.get(fold(old)) is client:
                del self._nicks[fold(old)]
            self._nicks[fold(new)] = client
            client.nick = new
            self.send_to(client, NickRevoked(old, new))
            rooms = client.rooms
            for room, before in zip(rooms, once.befores([room.name for room in rooms])):
                renamed = Renamed(old, new, before, client.account)
                room.post(once.author(room, client.outbox, renamed, self._rooms), renamed)
                self._bus.publish(room.name, Joined(new, room.name, client.account) if reaped
                                  else renamed)
            self._bus.member(client)
        return True

    def say(self, client, event, room=None, echo: bool = False, counted: bool = True) -> None:
        """A chat line (events.Said, Acted, Noticed; IRC's Tagged, not ``counted`` as a
        message) to ``room``, one of the sender's, by default its current one; ``echo``: the
        sender gets it too (IRC's ``echo-message``). Only the session thread of ``client``
        moves it between rooms, so reading ``client.room`` here needs no hub lock."""
        if room is None:
            room = client.room
        room.post(None if echo else client.outbox, event, self._publish_line)
        if counted:
            client.room_messages += 1  # the same thread, hence no lock (metrics.py reads it)

    def say_from_outside(self, client, name: str, event, counted: bool = True) -> str | None:
        """IRC's ``-n``: ``client``, not a member of room ``name``, sends it the chat line
        ``event``, to its members here and on every node. Returns the room's name as spelled,
        or None if the line did not go: no such room anywhere, or it does not take lines from
        outside (roomstate.takes_line_from; every room starts ``+n``). ``counted``: as
        Hub.say's (IRC's TAGMSG is no message)."""
        key, who = fold(name), (client.id, client.nick, client.account)
        with self._lock:
            room = self._rooms.get(key)
            if room is not None:
                if not room.state.takes_line_from(*who):
                    return None
                room.post(None, event, self._publish_line)
                spelled = room.name
        if room is None:  # members on other nodes only, if any; its state is kept here
            remote = self._bus.remote_rooms().get(key)
            if remote is None:
                return None
            with self._lock:
                spelled, state = self._shared.get(key, (remote[0], RoomState()))
            if not state.takes_line_from(*who):
                return None
            self._bus.publish(spelled, event)
        if counted:
            client.room_messages += 1  # (its session thread, as Hub.say)
        return spelled

    def history(self, client, count: int) -> bool:
        """``/history``: the newest ``count`` lines of the client's room, as one private
        block that fits its send queue. False: history is off."""
        room = client.room
        if room.tail is None:
            return False
        history = client.outbox.protocol.history
        entries = fit(room.name, unhidden(client.outbox.ignoring, room.tail.last(count)),
                      self._flusher.sendq_bytes // 2, history)
        room.send_private(client.outbox, history(room.name, entries), len(entries) + 2)
        return True

    def recipient(self, nick: str):
        """``/msg``'s target on whatever node it is: (its nick as its owner spells it, a
        function that sends it one event and returns what the sender is to be told of it
        now: Presence.deliver_private), or None if there is no such nick."""
        target = self.find(nick)
        if target is not None:
            return target.nick, lambda event: self.deliver_private(target, event)
        remote = self._bus.remote_nick(nick) or self._member_elsewhere(nick)
        if remote is not None:  # (an away answer comes from its node)
            return remote, lambda event: self._bus.send_private(remote, event)
        return None

    def _member_elsewhere(self, nick: str) -> str | None:
        """``nick`` as spelled by another node's client that is in no room (an IRC client's
        member record: the rosters know members of rooms only), or None."""
        try:
            found = self._bus.describe(nick)
        except ClusterUnavailable:
            return None
        return found[1].nick if found is not None else None

    def receive_lines(self, room_name: str, events: list, position=None, stamps=None,
                      origin: str = "") -> None:
        """Lines from node ``origin`` to this node's members of ``room_name`` (the bus's
        reader; ``position``: the stream they come from and where in it, for the room's
        history; ``stamps``: the time that node gave each, position.Position)."""
        with self._lock:
            room = self._rooms.get(fold(room_name))
            if room is not None and room.members:
                room.post_many(None, events, stamps, origin,
                               once.authors(room, events, self._rooms))
            elif self._history is not None and self._history.lines:
                self._history.record_remote(room_name, events, position, stamps, origin)

    def receive_private(self, nick: str, event) -> None:
        """A private line from another node (the bus's reader)."""
        target = self.find(nick)
        if target is not None:
            away = self.deliver_private(target, event)
            if away is not None:  # answered where the sender is
                self._bus.send_private(event.sender, away)

    def send_to(self, client, *events) -> None:
        """Events for ``client`` alone, ordered after every room line posted before them."""
        self.send_data(client, client.outbox.protocol.lines(events), len(events))

    def send_data(self, client, data: bytes, lines: int) -> None:
        """Bytes for ``client`` alone (its protocol's own replies: IRC's numerics), ordered
        as :meth:`send_to`'s events are."""
        rooms = client.rooms  # may be stale if it is moving: then one has nothing to add
        if rooms:
            send_private(rooms, client.outbox, data, lines)
        else:
            self._flusher.submit(client.outbox, data, lines)

    def find(self, nick: str):
        with self._lock:
            return self._nicks.get(fold(nick))

    def lookup(self, target: int | str):
        """A client by id (an int, or a string of digits: no nick starts with one) or nick."""
        if isinstance(target, str) and target.isascii() and target.isdigit():  # not "²"
            target = int(target)
        with self._lock:
            if isinstance(target, int):
                return self._clients.get(target)
            return self._nicks.get(fold(target))

    def broadcast(self, event, room_name: str | None = None) -> int | None:
        """``event`` to everyone, or to one room, on every node; returns how many got it
        (None: no such room anywhere)."""
        remote = self._bus.remote_rooms()
        key = fold(room_name.lstrip("#")) if room_name is not None else None
        with self._lock:
            if key is None:
                rooms = list(self._rooms.values())
            elif key in self._rooms or key in remote:
                rooms = [self._rooms[key]] if key in self._rooms else []
            else:
                return None
            for room in rooms:
                room.post(None, event)
            count = sum(len(room.members) for room in rooms)
            if key is None:
                count += self._tell_roomless(event)
        if key is None:
            self._bus.publish_all(event)
            return count + sum(members for _, members in remote.values())
        self._bus.publish(room_name.lstrip("#"), event)
        return count + remote.get(key, ("", 0))[1]

    def receive_broadcast(self, event) -> None:
        """Another node's operator line to every room of this node (the bus's reader)."""
        with self._lock:
            for room in self._rooms.values():
                if room.members:
                    room.post(None, event)
            self._tell_roomless(event)

    def _tell_roomless(self, event) -> int:
        """(hub lock held) An operator's line for everyone, to the registered clients in no
        room (IRC's, until they JOIN), who no room line reaches; returns how many."""
        roomless = [c for c in self._clients.values() if not c.rooms and c.nick]
        for client in roomless:
            self.send_to(client, event)
        return len(roomless)
