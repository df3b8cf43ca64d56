"""On a terminal: a prompt with line editing and history (prompt_toolkit), the room's lines
printed above it. Runs in the main thread; :class:`TerminalDisplay` is called from the link
thread.

``patch_stdout`` is what keeps a half-typed line intact: everything printed while the
prompt is up goes through a proxy that erases the prompt, prints, and draws the prompt
again with the text and cursor as they were. ``raw=True`` lets our colour codes through
(render.py has already removed anything else that could act on the terminal). The input
history lives in memory only: private messages have no business in a file.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from prompt_toolkit import PromptSession
from prompt_toolkit.patch_stdout import patch_stdout

from chat.protocol import is_quit
from chat.render import render
from chat.supervisor import Supervisor

PROMPT = "> "


class TerminalDisplay:
    """Each line with the local time, coloured unless ``colour`` is False."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def line(self, raw: bytes) -> None:
        self._show(raw.decode("utf-8", "replace"))

    def notice(self, text: str) -> None:
        self._show(text)

    def _show(self, text: str) -> None:
        print(render(text, datetime.now(), self.colour), flush=True)


def run(sup: Supervisor) -> None:
    """Read lines until /quit, Ctrl-D, Ctrl-C or the end of the session."""
    session: PromptSession = PromptSession()

    async def end_with_the_session() -> None:
        # The link thread cannot stop a prompt safely (the app may be between runs), so
        # the prompt's own loop looks: a tenth of a second is soon enough for a person.
        while not sup.done.is_set():
            await asyncio.sleep(0.1)
        if not session.app.future.done():
            session.app.exit()

    def watch() -> None:
        session.app.create_background_task(end_with_the_session())

    with patch_stdout(raw=True):
        while not sup.done.is_set():
            try:
                text = session.prompt(PROMPT, pre_run=watch)
            except (KeyboardInterrupt, EOFError):  # Ctrl-C, Ctrl-D
                sup.quit()
                break
            if text is None:  # the session ended under the prompt
                break
            if not _say(sup, text):
                break
        sup.wait(sup.quit_wait())


def _say(sup: Supervisor, text: str) -> bool:
    """Send what was entered, a line at a time (a paste may hold several); False after a
    /quit among them."""
    for line in text.splitlines():
        if is_quit(line):
            sup.quit(line)
            return False
        if line.strip():
            sup.send(line)
    return True
