"""Password hashing: argon2id (argon2-cffi), the field's standard, with a per-hash salt.

The parameters are OWASP's first argon2id recommendation (19 MiB, 2 passes, 1 lane): one
verification costs about 30 ms of one core on these machines (docs/protocol.md §12), which
makes a stolen accounts file slow to attack and stays short for a person logging in. Hashing
runs on the caller's thread (a session or an admin connection), never under a lock that
others wait on; argon2-cffi releases the GIL while it works, so the chat goes on meanwhile.
At most :data:`MAX_AT_ONCE` hashes run at a time: each holds its 19 MiB while it runs, so
1,000 clients logging in at once cost 4 x 19 MiB, not 19 GiB; the rest wait their turn.

An unknown account is verified against a hash made at start (:meth:`Passwords.verify` with
None), so that it takes as long as a wrong password: the answer and its timing say nothing
about which names exist.
"""

from __future__ import annotations

import threading

TIME_COST = 2
MEMORY_KIB = 19456
PARALLELISM = 1
#: Hashes (and verifications) running at once, across the whole process.
MAX_AT_ONCE = 4
#: SPEC §12: passwords are 8-256 bytes (UTF-8).
MIN_BYTES = 8
MAX_BYTES = 256
PASSWORD_RULE = f"passwords are {MIN_BYTES}-{MAX_BYTES} bytes, with no spaces"


def problem(password: str) -> str | None:
    """What is wrong with ``password`` as a new password, or None. No spaces: the line
    protocol's ``/login NICK PASSWORD`` and ``/password OLD NEW`` split on them."""
    size = len(password.encode("utf-8", "surrogatepass"))
    if size < MIN_BYTES or size > MAX_BYTES or any(c.isspace() for c in password):
        return PASSWORD_RULE
    if not password.isprintable():
        return "passwords cannot contain control characters"
    return None


class Passwords:
    """Hashes and verifies; thread-safe (``_slots`` bounds the work in progress).

    argon2-cffi is imported, and the decoy hash made, at the first hash or verification, not
    at start: they cost about 100 ms, which every start and every upgrade's pause would pay
    on a server where nobody logs in."""

    def __init__(self, time_cost: int = TIME_COST, memory_kib: int = MEMORY_KIB,
                 at_once: int = MAX_AT_ONCE) -> None:
        self._params = (time_cost, memory_kib)
        self._slots = threading.BoundedSemaphore(at_once)
        self._ready = threading.Lock()  # the first caller sets up; the rest wait for it
        self._hasher = None
        self._decoy = ""
        self._errors: tuple = ()

    def hash(self, password: str) -> str:
        hasher = self._setup()
        with self._slots:
            return hasher.hash(password)

    def verify(self, hashed: str | None, password: str) -> bool:
        """Whether ``password`` matches ``hashed`` (None: an unknown account, which never
        matches but costs the same). A stored hash that is not one (a damaged or hand-edited
        file) never matches either."""
        hasher = self._setup()
        with self._slots:
            try:
                ok = hasher.verify(hashed or self._decoy, password)
            except self._errors:
                return False
        return ok and hashed is not None

    def _setup(self):
        with self._ready:
            if self._hasher is None:
                from argon2 import PasswordHasher, Type
                from argon2.exceptions import (
                    InvalidHashError,
                    VerificationError,
                    VerifyMismatchError,
                )

                time_cost, memory_kib = self._params
                hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                                        parallelism=PARALLELISM, type=Type.ID)
                self._decoy = hasher.hash("chatd: no such account")
                self._errors = (VerifyMismatchError, VerificationError, InvalidHashError)
                self._hasher = hasher
            return self._hasher
