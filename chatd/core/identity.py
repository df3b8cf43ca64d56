"""Who a connection is: the identity seam of the hub (a mixin of :class:`~chatd.core.hub.Hub`).

A client is a guest, or logged in to an account (``client.account``); the account's name is
its nick while it is logged in, and nobody else may hold that nick (SPEC §12). The hub keeps
``_accounts`` (folded account name -> Client) beside ``_nicks``, under the same lock: at most
one connection per account, so the account's rooms and what it missed (a later step) have one
owner. Passwords are never seen here: the accounts package has checked them, on the session's
thread and outside every lock, before :meth:`log_in` is called.

A connection to a closed server is *pending* until it logs in: counted (admit), but with no
nick and in no room (:meth:`greet_pending`); its first login gives it both.

Every method takes the hub lock; the guest nick a displaced holder gets is claimed before it,
as ``_guest_nick`` does everywhere (it may ask the cluster).
"""

from __future__ import annotations

from chatd.core.bus import ClusterUnavailable
from chatd.core.closing import Close
from chatd.core.events import (
    LoggedIn,
    LoggedInElsewhere,
    LoggedOut,
    LoginRequired,
    NickReclaimed,
    Renamed,
    YouAre,
)
from chatd.text import fold

#: Why the older connection of an account that logged in again ends.
ELSEWHERE = Close("elsewhere")


class Identity:
    """Accounts over the hub's ``_nicks``, ``_accounts``, ``_lock``, ``_flusher`` and ``_bus``."""

    def greet_pending(self, client, greeting: list) -> None:
        """Closed mode: ``client`` is counted but gets no nick and no room until it logs in;
        it is told the welcome (``greeting[0]``) and that it must log in."""
        self.send_to(client, greeting[0], LoginRequired())

    def take_nick(self, client, nick: str) -> str | None:
        """A client that names itself (core/protocol.py ``names_itself``: IRC's NICK and
        USER) takes ``nick`` as it registers: in no room, nobody told. Returns why not (the
        nick is held here or on another node) or None. Raises bus.ClusterUnavailable."""
        key, in_use = fold(nick), f"nick {nick} is already in use"
        with self._lock:
            if key in self._nicks:
                return in_use
            self._nicks[key] = client  # held while the cluster is asked
        claimed = False
        try:
            claimed = self._bus.claim(nick, client)
        finally:
            with self._lock:
                if claimed:
                    client.nick = nick
                    self._note_users()
                    self._bus.member(client)  # other nodes find it in no room too (whois, msg)
                elif self._nicks.get(key) is client:
                    del self._nicks[key]
        return None if claimed else in_use

    def log_in(self, client, name: str, notice=None, greeting: list = ()) -> tuple:
        """``client`` proved it is account ``name``: it takes the nick ``name``. A guest holding
        the nick becomes another guest; the account's older connection is closed ("logged in
        elsewhere"). ``notice`` is what the client is told (``LoggedIn`` by default);
        ``greeting`` (a pending client's): the events told after it; a pending client enters
        no room here (Membership.rejoin puts it where its account was). Returns (an error text
        or None, the older connection's positions or None: fresher than what the store
        remembers). Raises bus.ClusterUnavailable when the holder needs a guest nick and the
        cluster cannot hand one out."""
        key = fold(name)
        old_nick = client.nick  # only this client's session thread changes it
        holder = self.find(name)
        spare = None  # a guest nick for a holder that is not this account
        if holder is not None and holder is not client and fold(holder.account or "") != key:
            spare = self._guest_nick(holder)
        elif holder is None and not self._bus.claim(name, client) and not (
                self._bus.reclaim(name) and self._bus.claim(name, client)):
            return f"nick {name} is in use on another node", None
        with self._lock:
            problem, spare, handed = self._take(client, name, spare, notice or LoggedIn(name),
                                                greeting)
        self._unreserve(spare)
        if problem is None and old_nick and fold(old_nick) != key:
            self._bus.release(old_nick, client)
        return problem, handed

    def log_out(self, client) -> tuple | None:
        """``/logout`` on an open server: the connection is a guest again (a guest nick: the
        account's nick stays its own). Returns (the new nick, the account's positions in its
        rooms, to remember), or None if the cluster cannot hand out a nick."""
        try:
            spare = self._guest_nick(client)
        except ClusterUnavailable:
            return None
        with self._lock:
            if client.account is not None and self._accounts.get(fold(client.account)) is client:
                del self._accounts[fold(client.account)]
            client.account = None
            positions = [(room.name, room.position()) for room in client.rooms]
            old = client.nick
            self._rename_locked(client, spare, LoggedOut(spare))
        self._bus.release(old, client)
        return spare, positions

    def give_up(self, client, name: str) -> tuple[bool, list | None]:
        """Another node's login to account ``name`` needs the nick ``client`` holds here
        (bus ``reclaim``): the account's own connection is closed ("logged in elsewhere"), a
        guest becomes another guest; the nick's claim is released before this returns, so
        the asking node can take it. -> (whether the nick was given up, the closed
        connection's positions or None). Not under any lock (it may ask the cluster)."""
        key = fold(name)
        if fold(client.nick or "") != key:
            return False, None  # not its nick any more: nothing to give up
        if fold(client.account or "") == key:
            with self._lock:
                if self._clients.get(client.id) is not client:
                    return False, None
                self._flusher.disconnect(client.outbox, ELSEWHERE, LoggedInElsewhere())
                self._forget(client, ELSEWHERE)
            self._bus.release(name, client)
            return True, client.positions
        try:
            spare = self._guest_nick(client)
        except ClusterUnavailable:
            return False, None
        with self._lock:
            renamed = self._nicks.get(key) is client
            if renamed:
                self._rename_locked(client, spare, NickReclaimed(name, spare))
        if not renamed:
            self._unreserve(spare)
            return False, None
        self._bus.release(name, client)
        return True, None

    def account_positions(self) -> list:
        """(room, where its history stands) for every room a logged-in client of this node
        is in: what cluster/standing.py keeps, should this node die (room locks taken under
        the hub lock, as posts allow)."""
        with self._lock:
            rooms = {id(room): room for client in self._accounts.values()
                     for room in client.rooms}
            return [(room.name, room.position()) for room in rooms.values()]

    def account_places(self) -> list:
        """(account, [(room, position), ...]) for every logged-in client of this node: what
        a single node writes as it goes (housekeeping.py), should it crash."""
        with self._lock:
            return [(client.account, [(room.name, room.position()) for room in client.rooms])
                    for client in self._accounts.values()]

    def by_account(self, name: str):
        """The connection logged in to account ``name`` on this node, or None."""
        with self._lock:
            return self._accounts.get(fold(name))

    # -- hub lock held --------------------------------------------------------------------------

    def _take(self, client, name: str, spare: str | None, notice, greeting) -> tuple:
        """:meth:`log_in` under the lock: -> (error text or None, the spare guest nick if it
        was not used, the older connection's positions or None). Nothing changes before the
        check that can refuse."""
        key = fold(name)
        elder, holder = self._accounts.get(key), self._nicks.get(key)
        if holder is elder or holder is client:
            holder = None  # the account's own connection, or this one: nobody to rename
        if holder is not None and (spare is None or self._nicks.get(fold(spare)) is not holder):
            return f"nick {name} is in use, try again", spare, None
        handed = None
        if elder is not None and elder is not client:
            self._flusher.disconnect(elder.outbox, ELSEWHERE, LoggedInElsewhere())
            self._forget(elder, ELSEWHERE)
            handed = elder.positions
        if holder is not None:
            self._rename_locked(holder, spare, NickReclaimed(name, spare))
            spare = None
        self._become(client, name, notice, greeting)
        return None, spare, handed

    def _become(self, client, name: str, notice, greeting) -> None:
        """``client`` is account ``name`` and holds its nick (which is free for it now)."""
        key = fold(name)
        if client.account is not None and self._accounts.get(fold(client.account)) is client:
            del self._accounts[fold(client.account)]
        self._accounts[key] = client
        client.account = name
        if not client.nick:  # pending: its nick; rejoin() gives it a room
            client.nick = name
            self._nicks[key] = client
            self._note_users()
            self.send_to(client, notice, YouAre(name), *greeting)
        elif client.nick != name:
            self._rename_locked(client, name, notice)
        else:
            self.send_to(client, notice)
            self._bus.member(client)

    def _rename_locked(self, client, new: str, notice) -> None:
        """``client`` is ``new`` now (claimed already); it is told ``notice``, its rooms see it
        renamed."""
        old = client.nick
        if self._nicks.get(fold(old)) is client:
            del self._nicks[fold(old)]
        self._nicks[fold(new)] = client
        client.nick = new
        self.send_to(client, notice)
        self._post_about(client, lambda before: Renamed(old, new, before, client.account))
        self._bus.member(client)

    def _unreserve(self, spare: str | None) -> None:
        """Give back a guest nick reserved for a holder that kept its nick after all (the
        hub lock not held)."""
        if spare is None:
            return
        with self._lock:
            holder = self._nicks.pop(fold(spare), None)
        if holder is not None:
            self._bus.release(spare, holder)
