"""Accounts in cluster mode: one shared store in Redis, with the single node's interface
(store/accounts.py: ``get``, ``all``, ``count``, ``create``, ``set_hash``, ``set_disabled``,
``set_last_login``, ``delete``, ``rooms``, ``set_rooms``), so chatd/accounts/ cannot tell
which one it has.

Keys (docs/cluster.md): ``account:KEY`` (KEY the folded name) holds the account as one
value, sealed and encrypted (codec.Seal.seal_hidden): whoever reads Redis reads neither the
password's hash nor when its owner last logged in, and whoever writes it without the secret
cannot make an account, change its hash or enable it (the value fails its check, and the
account counts as unavailable: nobody may take its nick). ``account-rooms:KEY`` holds where
it was when it last left, sealed the same way; ``accounts`` is the set of every KEY (count and
list, without a scan).

Two nodes registering one name at once: ``SET NX`` lets exactly one write it. A change to an
account (a new hash, disabled, last login) rewrites its value under ``WATCH``, so two nodes
changing one account at once lose neither change (the one whose value moved underneath
tries again, at most MAX_TRIES times).

What is read back is input: a value that fails its tag or its check
(checks.account_record) is logged once (``cluster_entry_rejected``) and the call fails as an
unreadable file does on a single node (``AccountStoreError``). Any thread; redis-py's client
is thread-safe (a pool); nothing here is called under the hub lock.
"""

from __future__ import annotations

import json

from chatd.cluster.checks import account_record, account_rooms
from chatd.cluster.codec import Rejected, text
from chatd.cluster.keys import ACCOUNT, ACCOUNT_IGNORES, ACCOUNT_ROOMS, ACCOUNTS
from chatd.cluster.link import scrub
from chatd.core.position import Position
from chatd.store.accounts import MAX_ROOMS, Account, AccountStoreError, ignore_list
from chatd.text import fold

#: Rewrites of one account that lost a race with another node's, before giving up.
MAX_TRIES = 5


class RedisAccounts:
    #: What a user is told when Redis cannot answer (docs/protocol.md §1's words for it).
    UNAVAILABLE = "cluster unavailable, try again"

    def __init__(self, link, standing) -> None:
        self.link = link  # connected by the bus before the first client is served
        self.standing = standing  # standing.py: where a dead node's accounts stood

    def open(self) -> None:
        """Nothing to check at start: Redis is reached when the cluster is joined."""

    def close(self) -> None:
        """The bus closes the connection."""

    # -- reads ------------------------------------------------------------------------------

    def get(self, name: str) -> Account | None:
        key = fold(name)
        value = self._call(lambda redis: redis.get(ACCOUNT + key))
        return None if value is None else self._open(key, value)

    def all(self) -> list[Account]:
        """Every account whose value passes its check, by name (what fails is logged and
        left out: an operator still sees the others)."""
        link = self.link

        def read(redis):
            keys = sorted(text(k) for k in redis.smembers(ACCOUNTS))
            with redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(ACCOUNT + key)
                return list(zip(keys, pipe.execute()))

        found = []
        for key, value in self._call(read):
            if value is None:
                continue  # deleted meanwhile
            try:
                found.append(self._account(key, value))
            except Rejected as exc:
                link.rejected("account", str(exc), account=key[:64])
        return found

    def count(self) -> int:
        return int(self._call(lambda redis: redis.scard(ACCOUNTS)))

    def rooms(self, name: str) -> list[tuple[str, Position | None]]:
        """Where the account was when it left; if it is logged in on a node that died
        without saying so, where that node last said its rooms stood (standing.py), or None
        for a room it did not."""
        key = fold(name)
        value = self._call(lambda redis: redis.get(ACCOUNT_ROOMS + key))
        if value is None:
            return []
        try:
            rooms, live = account_rooms(self.link.seal.open_hidden(ACCOUNT_ROOMS + key, value))
        except Rejected as exc:  # what it missed is not known: it is told nothing was
            self.link.rejected("account", str(exc), account=key[:64])
            return []
        if live is None:
            return rooms
        return self._call(lambda redis: [(room, self.standing.lookup(*live, room))
                                         for room, _ in rooms])

    # -- writes -----------------------------------------------------------------------------

    def create(self, account: Account) -> bool:
        """Add ``account``; False if the name is taken (``SET NX``: of two nodes racing,
        exactly one writes it). Rooms an older account of that name remembered go."""
        key = account.key
        value = self._seal(key, account)

        def write(redis):
            with redis.pipeline(transaction=True) as pipe:
                pipe.set(ACCOUNT + key, value, nx=True)
                made = pipe.execute()[0]
                if made:
                    pipe.sadd(ACCOUNTS, key)
                    pipe.delete(ACCOUNT_ROOMS + key, ACCOUNT_IGNORES + key)
                    pipe.execute()
                return bool(made)

        return self._call(write)

    def set_hash(self, name: str, hashed: str) -> bool:
        return self._change(name, lambda a: Account(a.name, hashed, a.created, a.last_login,
                                                    a.disabled))

    def set_disabled(self, name: str, disabled: bool) -> bool:
        return self._change(name, lambda a: Account(a.name, a.hash, a.created, a.last_login,
                                                    disabled))

    def set_last_login(self, name: str, when: float) -> bool:
        return self._change(name, lambda a: Account(a.name, a.hash, a.created, when,
                                                    a.disabled))

    def delete(self, name: str) -> bool:
        key = fold(name)

        def write(redis):
            with redis.pipeline(transaction=True) as pipe:
                pipe.delete(ACCOUNT + key)
                pipe.delete(ACCOUNT_ROOMS + key, ACCOUNT_IGNORES + key)
                pipe.srem(ACCOUNTS, key)
                return pipe.execute()[0] > 0

        return self._call(write)

    def ignores(self, name: str) -> list[str]:
        """The nicks the account ignores (sealed and encrypted: whom one ignores is one's
        own business); a value that fails its check counts as none."""
        key = fold(name)
        value = self._call(lambda redis: redis.get(ACCOUNT_IGNORES + key))
        if value is None:
            return []
        try:
            return ignore_list(self.link.seal.open_hidden(ACCOUNT_IGNORES + key, value))
        except Rejected as exc:
            self.link.rejected("account", str(exc), account=key[:64])
            return []

    def set_ignores(self, name: str, nicks: list[str]) -> None:
        key = fold(name)
        value = self.link.seal.seal_hidden(ACCOUNT_IGNORES + key, json.dumps(nicks))
        self._call(lambda redis: redis.set(ACCOUNT_IGNORES + key, value))

    def set_live(self, name: str, rooms: list[str]) -> None:
        """The account is logged in on this node, in ``rooms``: should the node die, a login
        elsewhere reads where they stood from standing.py."""
        key = fold(name)
        value = self.link.seal.seal_hidden(ACCOUNT_ROOMS + key, json.dumps(
            {"live": [self.link.node, self.standing.run], "rooms": rooms[:MAX_ROOMS]}))
        self._call(lambda redis: redis.set(ACCOUNT_ROOMS + key, value))

    def set_rooms(self, name: str, positions: list[tuple[str, Position]]) -> None:
        key = fold(name)
        value = self.link.seal.seal_hidden(ACCOUNT_ROOMS + key, json.dumps(
            [[room, at.record()] for room, at in positions[:MAX_ROOMS]]))
        self._call(lambda redis: redis.set(ACCOUNT_ROOMS + key, value))

    # -- helpers ------------------------------------------------------------------------------

    def _change(self, name: str, change) -> bool:
        """Rewrite account ``name`` as ``change(account)`` says; False if there is none. The
        value is watched: a write by another node between the read and ours makes ours fail
        and start again, from what that node wrote."""
        import redis as redis_lib

        key = fold(name)

        def write(redis):
            with redis.pipeline(transaction=True) as pipe:
                for _ in range(MAX_TRIES):
                    try:
                        pipe.watch(ACCOUNT + key)
                        value = pipe.get(ACCOUNT + key)
                        if value is None:
                            return False
                        new = self._seal(key, change(self._open(key, value)))
                        pipe.multi()
                        pipe.set(ACCOUNT + key, new, xx=True)
                        pipe.execute()
                        return True
                    except redis_lib.WatchError:
                        continue
            raise AccountStoreError(f"account {name} kept changing: try again")

        return self._call(write)

    def _seal(self, key: str, account: Account) -> str:
        return self.link.seal.seal_hidden(ACCOUNT + key, json.dumps(
            [account.name, account.hash, account.created, account.last_login,
             account.disabled]))

    def _account(self, key: str, value) -> Account:
        """A value read back -> the Account; Rejected if it fails its tag or check."""
        name, hashed, created, last_login, disabled = account_record(
            self.link.seal.open_hidden(ACCOUNT + key, value))
        if fold(name) != key:
            raise Rejected("an account under another's key")
        return Account(name, hashed, created, last_login, disabled)

    def _open(self, key: str, value) -> Account:
        try:
            return self._account(key, value)
        except Rejected as exc:
            self.link.rejected("account", str(exc), account=key[:64])
            raise AccountStoreError(f"account {key} in Redis failed its check") from None

    def _call(self, work):
        """``work(redis client)``; whatever Redis or the link does wrong is one
        AccountStoreError (the URL's password scrubbed from it)."""
        link = self.link
        if not link.up:  # fail at once, not after a socket timeout
            raise AccountStoreError("the link to Redis is down")
        try:
            return work(link.redis)
        except AccountStoreError:
            raise
        except Exception as exc:  # the redis client's errors, WRONGTYPE included
            raise AccountStoreError(f"Redis: {scrub(str(exc), link.url)[:200]}") from None
