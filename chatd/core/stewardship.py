"""Rooms that belong to someone (SPEC §13): operators, topics, modes, bans, invitations and
registration (a mixin of :class:`~chatd.core.hub.Hub`).

A room's state is a :class:`~chatd.core.roomstate.RoomState`, replaced whole under the hub
lock. The hub keeps every state that is not the blank one by room name (``_shared``: a room
with no member here has no Room object, a registered one included, but has its state there),
and a room that exists here mirrors it in ``Room.state``, with its maker (``creator``), which
only this node knows. What a change says is posted to the room under the same lock, so every
member sees changes in the order they were made. The *keeper* is told each change after the
lock is let go, on the thread that made it: the accounts store on a single node (it writes
registered rooms), cluster/roomstates.py in cluster mode (every room's, to every node).

Each change has two doors: a client's (it must be an operator of the room, checked here) and
the operator's (``chatctl room``: no check, the actor shown as ``[admin]``). Both end in
:meth:`Stewardship._set_state`.

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
    Revoked,
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
    """Over the hub's ``_rooms``, ``_shared``, ``_nicks``, ``_lock``, ``_lobby`` and
    membership."""

    #: keep_room(name, RoomState) / drop_room(name), told every change: accounts.Accounts
    #: on a single node, cluster/roomstates.py in cluster mode (``_rooms_shared``); None: no
    #: registered rooms here.
    _room_keeper = None
    _rooms_shared = False
    _unkept = "registered rooms need accounts, and this server has none"
    #: Room states kept, at most (docs/protocol.md §3).
    MAX_SHARED = 100_000

    def keep_rooms_with(self, keeper, states: list, shared: bool = False) -> None:
        """At start: ``keeper`` keeps rooms' states, and ``states`` ((name, RoomState), read
        from it before the lock) are theirs from now on. ``shared``: the keeper shares every
        room's state with the other nodes."""
        with self._lock:
            self._room_keeper, self._rooms_shared = keeper, shared
            for name, state in states[:self.MAX_SHARED]:
                self._set_state(name, state, None)

    def receive_room_state(self, name: str, state: RoomState) -> None:
        """Another node changed room ``name``'s state (the bus's reader; its room line came
        first, on its own)."""
        with self._lock:
            self._set_state(name, state, None)

    # -- the client's doors -----------------------------------------------------------------

    def set_topic(self, client, name: str, topic: str) -> str | None:
        if len(topic) > MAX_TOPIC:
            return f"topic too long (max {MAX_TOPIC} characters)"
        return self._by_member(client, name, lambda room, s: roomchanges.topic(
            room, s, client.nick, topic, client.account), ops_only=lambda s: "t" in s.modes)

    def grant(self, client, name: str, what: str, nick: str, on: bool) -> str | None:
        """``/op``, ``/deop`` (``what`` "ops"), ``/voice``, ``/devoice`` ("voiced"). A deop
        of the room's maker (an operator by being its maker, roomstate.py) ends that."""
        maker = []  # the maker deopped: its status ends here (_set_state keeps a maker)

        def change(room: str, state: RoomState):
            target = self._nicks.get(fold(nick))
            entry, shown = self._target(nick)
            if not on and what == "ops" and target is not None and state.creator == target.id \
                    and entry not in state.ops:
                maker.append(room)
                return state.change(creator=None), Revoked(client.nick, room,
                                                           roomchanges.LISTS[what], shown)
            return roomchanges.grant(room, state, client.nick, what, entry, shown, on)

        problem = self._by_member(client, name, change)
        if maker:
            with self._lock:
                room = self._rooms.get(fold(name))
                if room is not None:
                    room.state = room.state.change(creator=None)
        return problem

    def ban(self, client, name: str, nick: str, on: bool) -> str | None:
        return self._by_member(client, name, lambda room, s: roomchanges.ban(
            room, s, client.nick, *self._target(nick), on))

    def set_mode(self, client, name: str, change: str, key: str = "") -> str | None:
        return self._by_member(client, name, lambda room, s: roomchanges.mode(
            room, s, client.nick, change, key))

    def set_modes(self, client, name: str, changes: list) -> list[str]:
        """Several :meth:`set_mode` changes as one, as an IRC MODE line makes them: one room
        line for those made (roomchanges.modes); returns the refusals of the others, or why
        none could be tried."""
        refused: list[str] = []

        def change(room: str, state: RoomState):
            after, line, problems = roomchanges.modes(room, state, client.nick, changes)
            refused.extend(problems)
            return (after, line) if line is not None else (problems or ["no change"])[0]

        problem = self._by_member(client, name, change)
        return refused if refused or problem is None else [problem]

    def invite(self, client, name: str, nick: str) -> str | None:
        """An invitation names the account of a client logged in here, else the nick (of
        another node's client: its nick, which is its account if it has one)."""
        remote = self._bus.remote_nick(nick) if self.find(nick) is None else None

        def change(room: str, state: RoomState):
            target = self._nicks.get(fold(nick))
            if target is None and remote is None:
                return f"no such nick {nick}"
            if target is not None and fold(room) in {fold(r.name) for r in target.rooms}:
                return f"{target.nick} is in {room} already"
            told = InvitedTo(client.nick, room, client.account)
            if target is not None:
                self.send_to(target, told)
            else:
                self._bus.send_private(remote, told)
            entry = self._known_as(target) if target is not None else fold(remote)
            return state.change(invites=state.invites | {entry}), None

        return self._by_member(client, name, change)

    def kick_from_room(self, client, name: str, nick: str, reason: str) -> str | None:
        """A member of another node is kicked there (routed as an operator's kick is)."""
        with self._lock:
            room, problem = self._operated(client, name)
            if problem is not None:
                return problem
            if fold(nick) in self._nicks or fold(nick) not in {
                    fold(n) for n in self._bus.remote_members(room.name)}:
                return self._kick(room, client.nick, nick, reason)
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
        if fold(name) == fold(self._lobby.name):  # everyone's
            return f"{self._lobby.name} cannot be registered"
        account = client.account
        return self._by_member(client, name, lambda room, s: self._register(room, s, account))

    # -- the operator's door (chatctl room) ---------------------------------------------------

    def room_state(self, name: str):
        """(the room's name as spelled, its RoomState, its members' nicks here) or None: a
        room with a member here, or a state (a registered room exists while empty)."""
        with self._lock:
            room = self._rooms.get(fold(name))
            if room is not None:
                return room.name, room.state, sorted((c.nick for c in room.members.values()),
                                                     key=fold)
            found = self._shared.get(fold(name))
            return None if found is None else (*found, [])

    def admin_room(self, name: str, verb: str, *args) -> str | None:
        """``chatctl room VERB ROOM ARGS``: op/deop NICK, topic TEXT, mode CHANGE [KEY],
        delete. No operator check; shown to the room as done by ``[admin]``."""
        change = {
            "op": lambda room, s: roomchanges.grant(room, s, ADMIN, "ops",
                                                    *self._target(args[0]), True),
            "deop": lambda room, s: roomchanges.grant(room, s, ADMIN, "ops",
                                                      *self._target(args[0]), False),
            "topic": lambda room, s: roomchanges.topic(room, s, ADMIN, args[0]),
            "mode": lambda room, s: roomchanges.mode(room, s, ADMIN, *args),
            "delete": lambda room, s: (RoomState(), None),  # belongs to nobody, forgets all
        }[verb]
        with self._lock:
            room = self._rooms.get(fold(name))
            found = (room.name, room.state) if room is not None else self._shared.get(fold(name))
            if found is None:
                return f"no such room {name}"
            done = self._change(found[0], found[1], change)
            if verb == "delete" and room is not None:
                room.state = RoomState()  # its maker's status too
        return self._kept(done)

    def orphan_rooms(self, account: str) -> list[str]:
        """The account ``account`` was deleted: the rooms it founded belong to nobody any
        more (one someone is in keeps its topic, modes and lists; one nobody is in is
        forgotten), so that an account made later under that name gets none of them.
        Returns their names."""
        key = fold(account)
        with self._lock:
            founded = [(name, state) for name, state in self._shared.values()
                       if state.founder == key]
            done = [self._change(name, state, lambda room, s: (
                s.change(founder=None) if self._occupied(room) else RoomState(), None))
                for name, state in founded]
        for change in done:
            self._kept(change)
        return [name for name, _ in founded]

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
                self._set_state(room.name, state, None)
                room.state = state.change(creator=creator if isinstance(creator, int)
                                          and creator in room.members else None)

    # -- hub lock held ------------------------------------------------------------------------

    def _handed_rooms(self) -> dict:
        """name -> the stored form of the state of every unregistered room that has one,
        with its creator: what an upgrade carries (a registered room's is in the store)."""
        blank = RoomState()
        return {room.name: {**room.state.record(), "creator": room.state.creator}
                for room in self._rooms.values()
                if room.state != blank and not room.state.registered}

    def _state_of(self, name: str) -> RoomState:
        """The state of room ``name``, not made here: kept, or blank."""
        found = self._shared.get(fold(name))
        return found[1] if found is not None else RoomState()

    def _set_state(self, name: str, state: RoomState, line) -> None:
        """Room ``name`` has ``state`` now (its maker, if it exists here, stays); its
        members, on every node, are told ``line`` (None: nothing)."""
        key = fold(name)
        state = state.change(creator=None)
        if state == RoomState():
            self._shared.pop(key, None)
        elif key in self._shared or len(self._shared) < self.MAX_SHARED:
            self._shared[key] = (name, state)
        room = self._rooms.get(key)
        if room is not None and room is not self._lobby:
            room.state = state.change(creator=room.state.creator)
        if line is None:
            return
        if room is not None:
            self._post(room, None, line)
        else:  # nobody here: the other nodes' members
            self._bus.publish(name, line)

    def _change(self, name: str, state: RoomState, change) -> tuple:
        """``change(name, state)`` -> (new state, room line) or an error text, made. Returns
        (name, the state before, after, error text or None) for :meth:`_kept`."""
        done = change(name, state)
        if isinstance(done, str):
            return name, state, state, done
        self._set_state(name, *done)
        return name, state, done[0], None

    def _operated(self, client, name: str):
        """(``client``'s room ``name``, None) if it is an operator there, else (None, why)."""
        room = self._rooms.get(fold(name))
        if room is None or room not in client.rooms:
            return None, f"you are not in {name}"
        if not room.state.is_op(client.id, client.nick, client.account):
            return None, f"you are not an operator of {room.name}"
        return room, None

    def _by_member(self, client, name: str, change, ops_only=lambda state: True):
        """``change(room name, state)`` for a member of room ``name`` (an operator if
        ``ops_only(state)``): an error text or None."""
        with self._lock:
            room = self._rooms.get(fold(name))
            if room is None or room not in client.rooms:
                return f"you are not in {name}"
            if ops_only(room.state) and not room.state.is_op(client.id, client.nick,
                                                             client.account):
                return f"you are not an operator of {room.name}"
            done = self._change(room.name, room.state, change)
        return self._kept(done)

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
        if target.rooms or target.outbox.protocol.roomless:
            self.send_to(target, told)
        else:
            lobby = self._lobby
            entered = RoomEntered(lobby.name, len(lobby.members) + 1
                                  + len(self._bus.remote_members(lobby.name)))
            self._enter(target, lobby, (target.outbox.protocol.lines([told, entered]), 2))
        return None

    def _register(self, room: str, state: RoomState, account: str):
        if self._room_keeper is None:
            return self._unkept
        if state.registered:
            return f"{room} is registered already"
        if sum(s.registered for _, s in self._shared.values()) >= MAX_REGISTERED_ROOMS:
            return f"this server has no room for more registered rooms (at most " \
                   f"{MAX_REGISTERED_ROOMS})"
        return state.change(founder=fold(account)), RoomRegistered(room, account)

    def _occupied(self, name: str) -> bool:
        """Whether someone is in room ``name``, here or on another node."""
        room = self._rooms.get(fold(name))
        return bool(room is not None and room.members or self._bus.remote_members(name))

    def _forget_room(self, room) -> None:
        """``room`` went (its last member here left; membership.py): if nobody owns it and
        nobody is in it on any node, its state goes, for the whole cluster in cluster mode
        (queued: no I/O under the lock, roomstates.py)."""
        found = self._shared.get(fold(room.name))
        if found is None or found[1].registered or self._bus.remote_members(room.name):
            return
        del self._shared[fold(room.name)]
        if self._rooms_shared:
            self._room_keeper.drop_room(room.name)

    # -- not under the lock -------------------------------------------------------------------

    def _kept(self, done: tuple) -> str | None:
        """A change made (:meth:`_change`), told its keeper: a registered room's state
        written, one that is no longer registered dropped, and in cluster mode every room's
        shared. Returns its error text or None."""
        name, before, after, problem = done
        keeper = self._room_keeper
        if problem is None and keeper is not None:
            if after.registered or self._rooms_shared:
                keeper.keep_room(name, after)
            elif before.registered:
                keeper.drop_room(name)
        return problem
