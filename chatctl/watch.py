"""``chatctl watch``: chatd's events streamed live, across upgrades and restarts."""

from __future__ import annotations

import json
import time

import click

from chatctl import format as fmt
from chatctl.errors import CannotReach, Lost, Refused
from chatctl.params import complete_room
from chatctl.state import State, command, pass_state


@command(short_help="Stream chatd's events live, until Ctrl-C or chatd stops.")
@click.option("--room", metavar="ROOM", shell_complete=complete_room,
              help="Only the events of ROOM (joins, leaves, messages, kicks there).")
@pass_state
def watch(state: State, room: str | None) -> None:
    """Stream chatd's events as they happen, one line each: connects, disconnects (with the
    reason), nick changes, joins, kicks, admin commands (bans, mutes, ...) and, only when
    chatd has log_messages = true, message texts.

    A line is the UTC time, the event and its fields (nick, room, reason first); with --json
    each line is the event as a JSON object. Ctrl-C ends it (exit 0); so does chatd stopping
    (a last "shutdown" event). An upgrade or a restart under systemd ("restarting") does not:
    chatctl subscribes again to the chatd that takes over (events in between are not shown).
    A watcher that reads too slowly is dropped ("watch_dropped", exit 1). If chatd goes away
    without a word (killed), or none is back within 30 s of "restarting", chatctl exits 3.

    \b
      chatctl watch
      chatctl watch --room dev
      chatctl watch --json | jq -c 'select(.event == "client_kicked")'
    """
    last = None
    try:
        for last in _across_restarts(state, room):
            click.echo(json.dumps(last, ensure_ascii=False) if state.as_json
                       else fmt.watch_event(last))
    except KeyboardInterrupt:  # Ctrl-C is how a watch is meant to end
        return
    if last is not None and last.get("event") == "watch_dropped":  # the final one: ours
        raise Refused("chatd dropped this watch: it read too slowly", "watch_dropped",
                      state.as_json)


#: How long ``chatctl watch`` waits for chatd to answer again after ``restarting``.
RESUBSCRIBE_SECONDS = 30.0
RESUBSCRIBE_POLL_SECONDS = 0.1


def _across_restarts(state: State, room: str | None):
    """The watch's events; after ``restarting`` (an upgrade or a restart through systemd's fd
    store) the same watch again, on the admin socket of the chatd that took over."""
    while True:
        last = None
        for last in state.watch(room):
            yield last
        if last is None or last.get("event") != "restarting":
            return
        state.close()
        _wait_for_chatd(state, time.monotonic() + RESUBSCRIBE_SECONDS)


def _wait_for_chatd(state: State, deadline: float) -> None:
    """Until chatd answers on the admin socket again (its successor binds or takes it over
    within a second or so); CannotReach (exit 3) at ``deadline``."""
    while True:
        try:
            state.request("status")
            return
        except (CannotReach, Lost):  # not there yet, or going away under our request
            if time.monotonic() >= deadline:
                raise
        state.close()
        time.sleep(RESUBSCRIBE_POLL_SECONDS)  # polling for the socket, bounded by deadline


COMMANDS = (watch,)
