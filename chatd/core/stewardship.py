"""Rooms that belong to someone (SPEC §13): operators, topics, modes, bans, invitations and
registration (a mixin of :class:`~chatd.core.hub.Hub`).

A room's state is a :class:`~chatd.core.roomstate.RoomState` on the room (``Room.state``),
replaced whole under the hub lock; what it says is posted to the room under the same lock,
so every member sees changes in the order they were made. The state of a registered room is
kept by a *keeper* (the accounts store: SQLite on a single node), written after the lock is
let go, on the thread that made the change; a registered room exists while empty.

Each change has two doors: a client's (``client`` must be an operator of the room, checked
here) and the operator's (``chatctl room``: ``client`` None, no check, the actor shown as
``[admin]``). Both end in the same ``_change``.

Kicking moves another client out of a room from a thread that is not its own: the exception
to client.py's rule that only a client's session thread moves it, as Hub.revoke_nick is. A
line the kicked client is saying at that very moment may still reach the room it left.
"""

from __future__ import annotations

from chatd.core import roomchanges
from chatd.core.bus import ClusterUnavailable
from chatd.core.events import (
    InvitedTo,
    KickedFrom,
    RoomEntered,
    RoomKicked,
    RoomRegistered,
)
from chatd.core.roomstate import MAX_TOPIC, RoomState
from chatd.text import fold

#: The actor operators' changes are shown with (chatctl room ...).
ADMIN = "[admin]"
#: Registered rooms on one server (docs/protocol.md §3).
MAX_REGISTERED_ROOMS = 10_000


class Stewardship:
    """Over the hub's ``_rooms``, ``_nicks``, ``_lock``, ``_lobby`` and membership."""

    #: keep_room(name, RoomState) / drop_room(name), told every change: accounts.Accounts
    #: on a single node (it keeps registered rooms), cluster/roomstates.py in cluster mode
    #: (``shared``: every room's state, on every node); None: no registered rooms here.
    _room_keeper = None
    _rooms_shared = False
    _unkept = "registered rooms need accounts, and this server has none"
    #: Room states kept for rooms not made here (the cluster's), at most (docs §3).
    MAX_SHARED = 100_000

    def keep_rooms_with(self, keeper, states: list, shared: bool = False) -> None:
        """At start: ``keeper`` keeps rooms' states, and ``states`` ((name, RoomState), read
        from it before the lock) are theirs from now on; registered rooms exist from now on,
        empty. ``shared``: the keeper shares every room's state with other nodes."""
        with self._lock:
            self._room_keeper, self._rooms_shared = keeper, shared
            for name, state in states[:self.MAX_SHARED]:
                self._shared[fold(name)] = (name, state)
                if state.registered and fold(name) != fold(self._lobby.name):
                    (self._rooms.get(fold(name)) or self._room(name)).state = state

    def receive_room_state(self, name: str, state: RoomState) -> None:
        """Another node changed room ``name``'s state (the bus's reader): a registered room
        exists here too, one nobody owns any more goes if it is empty."""
        key = fold(name)
        with self._lock:
            if state == RoomState():
                self._shared.pop(key, None)
            elif key in self._shared or len(self._shared) < self.MAX_SHARED:
                self._shared[key] = (name, state)
            room = self._rooms.get(key)
            if room is self._lobby:
                return
            if room is None and state.registered:
                room = self._room(name)
            if room is not None:
                room.state = state.change(creator=room.state.creator)
                if not room.members and not state.registered:
                    self._drop_room(room)

    def _state_of(self, name: str) -> RoomState:
        """(hub lock held) The state of room ``name``, not made here: kept, or blank."""
        found = self._shared.get(fold(name))
        return found[1] if found is not None else RoomState()

    # -- the client's doors -----------------------------------------------------------------

    def set_topic(self, client, name: str, topic: str) -> str | None:
        if len(topic) > MAX_TOPIC:
            return f"topic too long (max {MAX_TOPIC} characters)"
        return self._by_member(client, name, lambda room, s: roomchanges.topic(
            room.name, s, client.nick, topic), ops_only=lambda s: "t" in s.modes)

    def grant(self, client, name: str, what: str, nick: str, on: bool) -> str | None:
        """``/op``, ``/deop`` (``what`` "ops"), ``/voice``, ``/devoice`` ("voiced")."""
        return self._by_operator(client, name, lambda room, s: roomchanges.grant(
            room.name, s, client.nick, what, *self._target(nick), on))

    def ban(self, client, name: str, nick: str, on: bool) -> str | None:
        return self._by_operator(client, name, lambda room, s: roomchanges.ban(
            room.name, s, client.nick, *self._target(nick), on))

    def set_mode(self, client, name: str, change: str, key: str = "") -> str | None:
        return self._by_operator(client, name, lambda room, s: roomchanges.mode(
            room.name, s, client.nick, change, key))

    def invite(self, client, name: str, nick: str) -> str | None:
        """An invitation names the account of a client logged in here, else the nick (of
        another node's client: its nick, which is its account if it has one)."""
        remote = self._bus.remote_nick(nick) if self.find(nick) is None else None
        with self._lock:
            room, problem = self._operated(client, name)
            if problem is None:
                target = self._nicks.get(fold(nick))
                if target is None and remote is None:
                    problem = f"no such nick {nick}"
                elif target is not None and room in target.rooms:
                    problem = f"{target.nick} is in {room.name} already"
                else:
                    entry = self._known_as(target) if target is not None else fold(remote)
                    problem = self._store(room, room.state.change(
                        invites=room.state.invites | {entry}), None)
                    told = InvitedTo(client.nick, room.name)
                    if target is not None:
                        self.send_to(target, told)
                    else:
                        self._bus.send_private(remote, told)
        self._keep(room if problem is None else None)
        return problem

    def kick_from_room(self, client, name: str, nick: str, reason: str) -> str | None:
        """A member of another node is kicked there (routed as an operator's kick is)."""
        with self._lock:
            room, problem = self._operated(client, name)
            if problem is None:
                remote = fold(nick) not in self._nicks and fold(nick) in {
                    fold(n) for n in self._bus.remote_members(room.name)}
                if not remote:
                    return self._kick(room, client.nick, nick, reason)
        if problem is not None:
            return problem
        try:
            found = self._bus.locate(nick)
            done = found is not None and self._bus.route(found[0], "room_kick", found[1], {
                "room": room.name, "by": client.nick, "reason": reason}) is True
        except ClusterUnavailable:
            return "cluster unavailable, try again"
        return None if done else f"{nick} is not in {room.name}"

    def kick_here(self, client, name: str, actor: str, reason: str) -> bool:
        """Another node's operator kicks ``client`` (of this node) out of room ``name``
        (the routed ``room_kick``); False if it is not in it."""
        with self._lock:
            room = self._rooms.get(fold(name))
            if room is None or room not in client.rooms:
                return False
            return self._kick(room, actor, client.nick, reason) is None

    def register_room(self, client, name: str) -> str | None:
        if client.account is None:
            return "log in to register a room: /login NICK PASSWORD"
        with self._lock:
            if self._rooms.get(fold(name)) is self._lobby:  # everyone's
                return f"{self._lobby.name} cannot be registered"
            room, problem = self._operated(client, name)
            if problem is None:
                problem = self._register(room, client.account)
        self._keep(room if problem is None else None)
        return problem

    # -- the operator's door (chatctl room) ---------------------------------------------------

    def room_state(self, name: str):
        """(the room's name as spelled, its RoomState, its members' nicks) or None."""
        with self._lock:
            room = self._rooms.get(fold(name))
            if room is None:
                return None
            return room.name, room.state, sorted((c.nick for c in room.members.values()),
                                                 key=fold)

    def admin_room(self, name: str, verb: str, *args) -> str | None:
        """``chatctl room VERB ROOM ARGS``: op/deop NICK, topic TEXT, mode CHANGE [KEY],
        delete. No operator check; shown to the room as done by ``[admin]``."""
        with self._lock:
            room = self._rooms.get(fold(name))
            if room is None:
                return f"no such room {name}"
            if verb == "delete":
                problem = self._unregister(room)
            else:
                change = {
                    "op": lambda s: roomchanges.grant(room.name, s, ADMIN, "ops",
                                                      *self._target(args[0]), True),
                    "deop": lambda s: roomchanges.grant(room.name, s, ADMIN, "ops",
                                                        *self._target(args[0]), False),
                    "topic": lambda s: roomchanges.topic(room.name, s, ADMIN, args[0]),
                    "mode": lambda s: roomchanges.mode(room.name, s, ADMIN, *args),
                }[verb]
                problem = self._apply(room, change)
        self._keep(room if problem is None else None, drop=verb == "delete")
        return problem

    def orphan_rooms(self, account: str) -> list[str]:
        """The account ``account`` was deleted: the rooms it founded belong to nobody any
        more (they keep their topic, modes and lists while someone is in them; one nobody is
        in goes), so that an account made later under that name gets none of them. Returns
        their names."""
        key = fold(account)
        changed = []  # (name, its state now, whether someone is in it anywhere)
        with self._lock:
            for name, state in list(self._shared.values()):
                if state.founder != key:
                    continue
                state = state.change(founder=None)
                self._shared[fold(name)] = (name, state)
                room = self._rooms.get(fold(name))
                if room is not None:
                    room.state = state.change(creator=room.state.creator)
                    if not room.members and room is not self._lobby:
                        self._drop_room(room)
                        room = None
                alive = room is not None or bool(self._bus.remote_members(name))
                if not alive:
                    del self._shared[fold(name)]
                changed.append((name, state, alive))
        keeper = self._room_keeper
        for name, state, alive in changed if keeper is not None else ():
            if self._rooms_shared and alive:
                keeper.keep_room(name, state)
            else:
                keeper.drop_room(name)
        return [name for name, _, _ in changed]

    # -- an upgrade (takeover.py) ----------------------------------------------------------

    def resume_rooms(self, handed) -> None:
        """The state of the unregistered rooms of the process before the upgrade
        (:meth:`_handed_rooms`), once its clients are back: the rooms exist again. A record
        that is not valid (a state file is input) leaves its room as a new one."""
        if handed.__class__ is not dict:
            return
        with self._lock:
            for name, record in handed.items():
                room = self._rooms.get(fold(name)) if isinstance(name, str) else None
                state = RoomState.from_record(record)
                if room is None or state is None or state.registered or room is self._lobby:
                    continue
                creator = record.get("creator")
                room.state = state.change(creator=creator if isinstance(creator, int)
                                          and creator in room.members else None)
                self._shared[fold(room.name)] = (room.name, state)

    # -- hub lock held ------------------------------------------------------------------------

    def _handed_rooms(self) -> dict:
        """name -> the stored form of the state of every unregistered room that has one,
        with its creator: what an upgrade carries (a registered room's is in the store)."""
        blank = RoomState()
        return {room.name: {**room.state.record(), "creator": room.state.creator}
                for room in self._rooms.values()
                if room.state != blank and not room.state.registered}

    def _operated(self, client, name: str):
        """(``client``'s room ``name``, None) if it is an operator there, else (None, why)."""
        room = self._rooms.get(fold(name))
        if room is None or room not in client.rooms:
            return None, f"you are not in {name}"
        if not room.state.is_op(client.id, client.nick, client.account):
            return None, f"you are not an operator of {room.name}"
        return room, None

    def _by_operator(self, client, name: str, change) -> str | None:
        return self._by_member(client, name, change, ops_only=lambda state: True)

    def _by_member(self, client, name: str, change, ops_only) -> str | None:
        """``change(room, state)`` -> (new state, room line) or an error text, for a member
        of room ``name`` (an operator if ``ops_only(state)``)."""
        with self._lock:
            room = self._rooms.get(fold(name))
            if room is None or room not in client.rooms:
                return f"you are not in {name}"
            if ops_only(room.state) and not room.state.is_op(client.id, client.nick,
                                                             client.account):
                return f"you are not an operator of {room.name}"
            problem = self._apply(room, lambda state: change(room, state))
        self._keep(room if problem is None else None)
        return problem

    def _apply(self, room, change) -> str | None:
        done = change(room.state)
        if isinstance(done, str):
            return done
        return self._store(room, *done)

    def _store(self, room, state: RoomState, line) -> str | None:
        """``room`` has ``state`` now; its members (on every node) are told ``line`` (None:
        nothing)."""
        room.state = state
        self._shared[fold(room.name)] = (room.name, state.change(creator=None))
        if line is not None:
            self._post(room, None, line)
        return None

    def _keep(self, room, drop: bool = False) -> None:
        """(not under the lock) The room's state, told its keeper (which writes a single
        node's registered rooms, or shares every room's with the other nodes)."""
        keeper = self._room_keeper
        if room is None or keeper is None:
            return
        if drop:
            keeper.drop_room(room.name)
        else:
            keeper.keep_room(room.name, room.state)

    def _known_as(self, client) -> str:
        """What a list names ``client`` by: its account if it is logged in, else its nick."""
        return fold(client.account or client.nick)

    def _target(self, nick: str) -> tuple[str, str]:
        """(the entry for ``nick`` in a room's list, how the room is told of it)."""
        target = self._nicks.get(fold(nick))
        if target is None:
            return fold(nick), nick
        return self._known_as(target), target.nick

    def _kick(self, room, actor: str, nick: str, reason: str) -> str | None:
        """Out of ``room`` and, if that was its only room, into the lobby (told first)."""
        target = self._nicks.get(fold(nick))
        if target is None or room not in target.rooms:
            return f"{nick} is not in {room.name}"
        self._leave(target, room)
        self._post(room, None, RoomKicked(target.nick, room.name, actor, reason))
        told = KickedFrom(room.name, actor, reason)
        if target.rooms:
            self.send_to(target, told)
        else:
            lobby = self._lobby
            entered = RoomEntered(lobby.name, len(lobby.members) + 1
                                  + len(self._bus.remote_members(lobby.name)))
            self._enter(target, lobby, (target.outbox.protocol.lines([told, entered]), 2))
        return None

    def _register(self, room, account: str) -> str | None:
        if self._room_keeper is None:
            return self._unkept
        if room.state.registered:
            return f"{room.name} is registered already"
        if sum(r.state.registered for r in self._rooms.values()) >= MAX_REGISTERED_ROOMS:
            return f"this server has no room for more registered rooms (at most " \
                   f"{MAX_REGISTERED_ROOMS})"
        return self._store(room, room.state.change(founder=fold(account)),
                           RoomRegistered(room.name, account))

    def _unregister(self, room) -> str | None:
        """``chatctl room delete``: the room belongs to nobody any more and forgets its
        topic, modes and lists; its members stay. An empty one goes."""
        room.state = RoomState()
        self._shared.pop(fold(room.name), None)
        if not room.members and room is not self._lobby:
            self._drop_room(room)
        return None

    def _drop_room(self, room) -> None:
        """An empty room that nobody owns goes (its tail with it)."""
        del self._rooms[fold(room.name)]
        if room.tail is not None:
            self._history.release(room.name)

    def _forget_room(self, room) -> None:
        """``room`` went (its last member here left; membership.py): in cluster mode, its
        state goes for the whole cluster too if nobody is in it anywhere and nobody owns it;
        queued, no I/O under the lock (roomstates.py)."""
        found = self._shared.get(fold(room.name))
        if found is None or found[1].registered or self._bus.remote_members(room.name):
            return
        del self._shared[fold(room.name)]
        if self._rooms_shared:
            self._room_keeper.drop_room(room.name)
