"""What sessions and listeners read of the running service: the seam that keeps core and net
from knowing the service (chatd/lifecycle). The service hands them an object of this shape; a
reload swaps ``config`` whole, so readers pick up new limits at their next read of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from chatd.core.gate import Gate


class ConnectionKeeper(Protocol):
    """Where plain connections are kept across a restart (systemd's fd store; a no-op
    without one)."""

    def keep_client(self, client) -> None: ...

    def forget_client(self, client) -> None: ...

    def forget_id(self, client_id: int) -> None: ...


class Settings(Protocol):
    config: Any  # the Config in force now
    gate: Gate | None  # where an upgrade parks the sessions; None: nothing parks them
    fd_store: ConnectionKeeper
    #: chatd.accounts.Accounts (logins, registration); None: a hub run without accounts (the
    #: in-process test harness), where every client is a guest.
    accounts: Any


@dataclass
class LiveSettings:
    """The service's Settings: plain attributes, so a session's read costs nothing more."""

    config: Any
    gate: Gate | None
    fd_store: ConnectionKeeper
    accounts: Any = None
