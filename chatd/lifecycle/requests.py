"""The main thread's queue (service.py serves it): the events signal handlers queue by name,
and the requests admin threads queue (a reload, an upgrade) and wait for. A request's
``name`` is its event's (the service calls ``handle_<name>``).
"""

from __future__ import annotations

import queue
import signal
import threading

from chatd.admin.server import ASKING

#: What each signal asks of the main thread.
SIGNAL_EVENTS = ((signal.SIGTERM, "shutdown"), (signal.SIGINT, "shutdown"),
                 (signal.SIGHUP, "reload"), (signal.SIGUSR2, "upgrade"))


class ReloadRequest:
    """A reload asked for by an admin thread: the main thread finishes it, the asker waits."""

    name = "reload"

    def __init__(self) -> None:
        self._done = threading.Event()
        self._outcome: tuple | None = None

    def finish(self, outcome: tuple) -> None:
        self._outcome = outcome
        self._done.set()

    def wait(self, timeout: float) -> tuple:
        if not self._done.wait(timeout):
            raise TimeoutError
        return self._outcome

    def cancel(self) -> None:
        """Answered without being carried out: chatd is shutting down."""
        self.finish((False, "chatd is shutting down", []))


class UpgradeRequest(ReloadRequest):
    """An upgrade asked for by an admin thread; ``replied`` is set once chatctl has its
    answer, so that a successful upgrade ends this process only after that."""

    name = "upgrade"

    def __init__(self, timeout: float, store: bool = False, asker=None) -> None:
        super().__init__()
        self.timeout = timeout
        self.store = store  # to systemd's fd store (a restart), not to a new process
        self.asker = asker  # (admin connection, request id): answered after an exec
        self.replied = threading.Event()

    def cancel(self) -> None:
        self.finish((False, "chatd is shutting down"))


class EventQueue:
    """Reentrant (SimpleQueue): a signal handler may put while the main thread gets."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def put(self, event) -> None:
        self._queue.put(event)

    def next(self, timeout: float):
        """The next event, or ``"tick"`` if none came within ``timeout`` (housekeeping)."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return "tick"

    def install_signal_handlers(self) -> None:
        """Handlers only queue a name: they run between bytecodes of the main thread, so
        they must not take locks or log."""
        for signum, name in SIGNAL_EVENTS:
            signal.signal(signum, lambda _signum, _frame, name=name: self._queue.put(name))

    def request_shutdown(self) -> None:
        self._queue.put("shutdown")

    def request_reload(self, timeout: float) -> tuple[bool, str, list[str]]:
        """Have the main thread reload (as SIGHUP does) and wait for the outcome. Raises
        TimeoutError if the main thread has not finished within ``timeout``."""
        request = ReloadRequest()
        self._queue.put(request)
        return request.wait(timeout)

    def request_upgrade(self, timeout: float, store: bool = False):
        """Have the main thread upgrade (as SIGUSR2 does), or with ``store`` hand everything
        to systemd's fd store for a restart (``chatctl systemd-stop``), and wait. Returns (ok,
        result or reason, call this once the reply is sent). An upgrade that succeeds execs
        (reexec.py): this thread is gone then, and the new image answers the connection that
        asked (admin.ASKING, set by the admin thread)."""
        request = UpgradeRequest(timeout, store, ASKING.get())
        self._queue.put(request)
        ok, outcome = request.wait(4 * timeout + 5)
        return ok, outcome, request.replied.set

    def cancel_pending(self) -> None:
        """Answer requests still queued behind a shutdown, so no admin thread waits for them."""
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, ReloadRequest):
                event.cancel()
