"""The admin commands that steer the process: reload, shutdown, upgrade, handover.

They ask the main thread (the service's queue) and wait for it; shutdown, upgrade and handover
also leave something to do once their reply is sent (:class:`Then`), so that chatctl hears
the answer before the process ends.
"""

from __future__ import annotations

from chatd.admin.protocol import RELOAD_WAIT_SECONDS, AdminError

#: Each step of an upgrade (the new process starting, the freeze, its takeover) by default.
UPGRADE_WAIT_SECONDS = 10.0


class Then:
    """A follow-up that calls ``act`` once the reply is sent; nothing if it could not be."""

    def __init__(self, act) -> None:
        self._act = act

    def run(self, _conn, _peer_log) -> None:
        self._act()

    def abandon(self) -> None:
        pass


def do_reload(ctx) -> dict:
    try:
        ok, message, restart_required = ctx.reload(RELOAD_WAIT_SECONDS)
    except TimeoutError:
        raise AdminError("timeout", f"the reload did not finish within "
                         f"{RELOAD_WAIT_SECONDS:g}s; it may still take effect") from None
    if not ok:
        raise AdminError("reload_failed", message)
    return {"reloaded": True, "config": ctx.config().config_path,
            "restart_required": restart_required}


def do_shutdown(ctx) -> tuple[dict, Then]:
    return {"shutting_down": True}, Then(ctx.request_shutdown)


def do_upgrade(ctx, timeout: float | None = None) -> tuple[object, Then]:
    return _upgrade(ctx, False, timeout)


def do_handover(ctx, timeout: float | None = None) -> tuple[object, Then]:
    """Into systemd's fd store (``chatctl systemd-stop``), not to a new process."""
    return _upgrade(ctx, True, timeout)


def _upgrade(ctx, store: bool, timeout: float | None):
    """-> (result, the call that lets the old process end once the reply is sent)."""
    wait = UPGRADE_WAIT_SECONDS if timeout is None else min(max(float(timeout), 0.5), 300.0)
    try:
        ok, outcome, replied = ctx.upgrade(wait, store)
    except TimeoutError:
        raise AdminError("timeout", "the upgrade did not finish in time; it may still "
                         "take effect") from None
    if not ok:
        raise AdminError("upgrade_failed", outcome)
    return outcome, Then(replied)
