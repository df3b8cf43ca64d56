"""Who is in which room: the membership seam of the hub (a mixin of :class:`~chatd.core.hub.Hub`).

A client may be a member of several rooms (``client.rooms``, a tuple replaced whole under the
hub lock, so that a thread without the lock reads it as it was). The line protocol keeps one
current room (``client.room``) and moves it with :meth:`join`; a protocol whose clients sit in
several rooms at once uses :meth:`enter` and :meth:`part`. Rooms are made on first entry and
dropped when their last member leaves (the lobby stays); each holds its history tail meanwhile.

Every method here that changes membership takes the hub lock; those starting with ``_`` expect
it held. A history tail may read the store, so it is had before the lock (:meth:`_tail_for`).
"""

from __future__ import annotations

from chatd.core import once
from chatd.core.events import Joined, Left, RoomEntered, TopicIs
from chatd.core.position import Position
from chatd.core.rooms import Room
from chatd.core.roomstate import RoomState
from chatd.text import fold

#: The most rooms one client may be in at once (enter() refuses more; a member record from
#: another node with more is rejected). The line protocol's clients are in one.
MAX_ROOMS = 64


class Membership:
    """Room membership over the hub's ``_rooms`` (folded name -> Room), ``_lock`` and ``_bus``."""

    def join(self, client, name: str, key: str = "") -> str | None:
        """Move ``client`` from its current room to room ``name`` (created on demand, with
        ``client`` its operator: roomstate.py); returns an error text or None. ``key``: for
        a room with one (+k)."""
        tail = self._tail_for(name)
        try:
            with self._lock:
                old = client.room
                if fold(name) == fold(old.name):
                    return f"you are already in {old.name}"
                new, problem = self._admitted(client, name, key)
                if problem is not None:
                    return problem
                if new is None:
                    new, tail = self._room(name, tail), None  # the room holds the tail now
                    new.state = self._made_by(client, name)
                self._move(client, old, new)
        finally:
            if tail is not None:  # the room existed (or no join): it holds its own
                self._history.release(name)
        return None

    def enter(self, client, name: str, key: str = "", since: Position | None = None) -> str | None:
        """``client`` becomes a member of room ``name`` too, staying in its other rooms;
        returns an error text or None (as :meth:`join`). ``since``: its account's last line
        there (§12): it is replayed what it missed instead of the last lines (Room.attach)."""
        tail = self._tail_for(name)
        try:
            with self._lock:
                room = self._rooms.get(fold(name))
                if room is not None and room in client.rooms:
                    return f"you are already in {room.name}"
                if len(client.rooms) >= MAX_ROOMS:
                    return f"you are in too many rooms (at most {MAX_ROOMS})"
                room, problem = self._admitted(client, name, key)
                if problem is not None:
                    return problem
                if room is None:
                    room, tail = self._room(name, tail), None
                    room.state = self._made_by(client, name)
                self._enter(client, room, self._entered(client, room), since)
        finally:
            if tail is not None:
                self._history.release(name)
        return None

    def part(self, client, name: str, reason: str | None = None) -> str | None:
        """``client`` leaves room ``name`` and stays in its others; returns an error text or
        None. The room hears why (``reason``), the client nothing: its protocol answers it."""
        with self._lock:
            room = self._rooms.get(fold(name))
            if room is None or room not in client.rooms:
                return f"you are not in {name}"
            self._leave(client, room)
            self._post(room, None, Left(client.nick, room.name, reason, client.account))
        return None

    def rejoin(self, client, positions: list) -> None:
        """An account logged in (§12): back in the room it was in, the first of
        ``positions`` ((room, position.Position, or None if not known: then it joins as
        anyone does) as its last connection left them; a line
        client is in one room), replayed what it missed there since. A connection already in
        that room gets the lines between then and the first it was sent on connect; a
        pending one (a closed server's) with nowhere to go back to enters the lobby. A
        client that may be in no room (IRC's) stays where it is: it JOINs what it wants."""
        if client.outbox.protocol.roomless:
            return  # (an IRC client JOINs what it wants itself)
        if not positions:
            if client.room is None:
                with self._lock:
                    self._enter(client, self._lobby)
            return
        name, since = positions[0]
        tail = self._tail_for(name)
        try:
            with self._lock:
                current, room = client.room, self._rooms.get(fold(name))
                if room is not None and room is current:
                    if since is not None:  # (None: where it stood is not known)
                        room.missed(client.outbox, since, client.seen_from)
                    return
                if self._admitted(client, name, "")[1] is not None:
                    if current is None:  # banned or shut out since: the lobby, as anyone
                        self._enter(client, self._lobby)
                    return
                if room is None:
                    room, tail = self._room(name, tail), None
                self._move(client, current, room, since)
        finally:
            if tail is not None:
                self._history.release(name)

    def _move(self, client, old: Room | None, new: Room, since: Position | None = None) -> None:
        """(hub lock held) ``client`` leaves ``old`` (if any) for ``new``: told ``you joined``
        before the first line of the new room, and after the old room's last (the detach is
        queued first); ``since`` as in Room.attach."""
        if old is not None:
            self._leave(client, old)
            self._post(old, None, Left(client.nick, old.name, None, client.account))
        self._enter(client, new, self._entered(client, new), since)

    def _admitted(self, client, name: str, key: str) -> tuple:
        """(room ``name`` here or None, why ``client`` may not join it or None): its state
        is the room's, or the cluster's (stewardship.py) for a room not made here yet."""
        room = self._rooms.get(fold(name))
        state = room.state if room is not None else self._state_of(name)
        shown = room.name if room is not None else name
        members = 0
        if "l" in state.modes:  # (+l: counted on every node only where it matters)
            members = len(room.members) if room is not None else 0
            members += len(self._bus.remote_members(shown))
        return room, state.refusal(shown, client.nick, client.account, key, members)

    def _made_by(self, client, name: str) -> RoomState:
        """A new room's state: the one kept for it, if any; ``client`` made it, and is its
        operator while it stays, unless the room is registered or has members on other nodes
        (it was made there)."""
        state = self._state_of(name)
        if state.registered or self._bus.remote_members(name):
            return state
        return state.change(creator=client.id)

    def _entered(self, client, room: Room) -> tuple[bytes, int]:
        """The joiner's own ``*** you joined`` line, with the members on every node, and
        the room's topic if it has one."""
        members = len(room.members) + 1 + len(self._bus.remote_members(room.name))
        told = [RoomEntered(room.name, members)]
        if room.state.topic:
            told.append(TopicIs(room.name, room.state.topic, room.state.topic_by))
        return client.outbox.protocol.lines(told), len(told)

    def respeak(self, client, speaks) -> None:
        """``client``'s room lines are rendered with ``speaks`` from now on (core/protocol.py;
        IRC's ``server-time``): its rooms count it there, under the hub lock, as its outbox
        changes. A flush running meanwhile groups it by either: both render every line."""
        with self._lock:
            outbox = client.outbox
            if outbox.speaks is speaks:
                return
            for room in client.rooms:
                room.respeak(outbox.speaks, speaks)
            outbox.speaks = speaks

    # -- an upgrade (upgrade.py) ----------------------------------------------------------------

    def restore(self, client, nick: str, room_names: list[str], account: str | None = None) -> None:
        """A client handed over by an upgrade, back in its rooms (its current one first) under
        its nick, announced to nobody: for everyone else nothing happened."""
        tails = {name: self._tail_for(name) for name in room_names}
        with self._lock:
            self._clients[client.id] = client
            self._per_ip[client.ip] = self._per_ip.get(client.ip, 0) + 1
            if nick:  # (a pending client of a closed server has none yet: identity.py)
                self._nicks[fold(nick)] = client
            client.nick = nick
            client.account = account
            if account:
                self._accounts[fold(account)] = client
            for name in room_names:
                room = self._rooms.get(fold(name))
                if room is None:
                    room, tails[name] = self._room(name, tails[name]), None
                if room not in client.rooms:
                    self._add(client, room)
                    room.enter(client)
        for name, tail in tails.items():
            if tail is not None:
                self._history.release(name)

    # -- membership (hub lock held) -----------------------------------------------------------

    def _tail_for(self, name: str):
        """The history tail of room ``name``, held (History.acquire) for a room about to be
        made, or None (history off). Called *before* the hub lock: it may read the store,
        and no store I/O runs under the hub lock."""
        history = self._history  # set once, by use_history
        if history is None or not history.lines:
            return None
        return history.acquire(name)

    def _room(self, name: str, tail=None) -> Room:
        """A new room, with the state kept for it if any (stewardship.py); ``tail`` (from
        :meth:`_tail_for`) is its history, held by the room until it is deleted (_leave)."""
        room = Room(name, self._flusher)
        if self._shared:  # (the lobby is made before the hub has the table)
            room.state = self._state_of(name)
        if tail is not None:
            self._keep_history(room, tail)
        self._rooms[fold(name)] = room
        return room

    def _keep_history(self, room: Room, tail) -> None:
        with room.lock:
            room.tail = tail
            room.on_join = self._history.on_join

    def set_replay(self, lines: int) -> None:
        """A reload's ``history_on_join``: what joiners get from now on (an int each room
        reads under its lock; a join at this very moment may get the old count)."""
        with self._lock:
            if self._history is None or not self._history.lines:
                return
            self._history.on_join = min(lines, self._history.lines)
            for room in self._rooms.values():
                room.on_join = self._history.on_join

    def use_history(self, history) -> None:
        """Turn history on once its store is open (service start, after any fork): the
        rooms that exist already (the lobby) get their tails now, read before the lock."""
        if not history.lines:
            return
        with self._lock:
            names = [room.name for room in self._rooms.values()]
        tails = {name: history.acquire(name) for name in names}
        with self._lock:
            self._history = history
            for name, tail in tails.items():
                room = self._rooms.get(fold(name))
                if room is not None and room.tail is None:
                    self._keep_history(room, tail)
                else:
                    history.release(name)

    def _post(self, room: Room, author, event) -> None:
        """A room line for this node's members and, through the bus, the other nodes'."""
        room.post(once.author(room, author, event, self._rooms), event)
        self._bus.publish(room.name, event)

    def _post_about(self, client, make) -> None:
        """``make(before)``: a line about ``client`` (a rename: once.py), posted to each of
        its rooms and read once by a member of several."""
        rooms = client.rooms
        for room, before in zip(rooms, once.befores([room.name for room in rooms])):
            self._post(room, client.outbox, make(before))

    def _enter(self, client, room: Room, first: tuple[bytes, int] | None = None,
               since: Position | None = None) -> None:
        """``first``: the joiner's own lines that come before the room's; ``since``: an
        account's last line there (Room.attach)."""
        self._add(client, room)
        seen_from = room.enter(client, first, since)
        if room is client.room:
            client.seen_from = seen_from
        self._post(room, client.outbox, Joined(client.nick, room.name, client.account))
        if client.away is not None:  # after the JOIN, here and on the other nodes
            self._tell_away(client.nick, client.away, (room,), client)
            self._bus.away(client.nick, client.away, room.name)
        self._bus.member(client)

    @staticmethod
    def _add(client, room: Room) -> None:
        client.rooms = (*client.rooms, room)
        if client.room is None:
            client.room = room

    def _leave(self, client, room: Room) -> Position:
        """Returns where ``client`` stands in ``room``'s history as it leaves."""
        rooms = tuple(r for r in client.rooms if r is not room)
        client.rooms = rooms
        if client.room is room:
            client.room = rooms[0] if rooms else None
        position = room.leave(client)
        if room.state.creator == client.id:  # an unregistered room's maker: op while in it
            room.state = room.state.change(creator=None)
        if not room.members and room is not self._lobby:  # (its state stays: stewardship.py)
            del self._rooms[fold(room.name)]
            if room.tail is not None:  # idle now, within history.py's bound (no I/O)
                self._history.release(room.name)
            self._forget_room(room)
        return position
