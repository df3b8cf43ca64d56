"""Not on a terminal: a pipe. stdin's lines go to the server, the server's lines come out on
stdout exactly as received (LF-terminated; no time, no colour), the client's own notices go
to stderr so that stdout is the server's alone. EOF on stdin sends ``/quit``.

stdin is read by a daemon thread with ``os.read`` (no buffered reader whose lock a thread
could still hold at exit), so the main thread can wait for the session and end it on
Ctrl-C or when the server puts us out, whatever stdin does.
"""

from __future__ import annotations

import os
import sys
import threading

from chat.protocol import LineSplitter, is_quit
from chat.supervisor import Supervisor


class PipeDisplay:
    """Server lines to stdout, notices to stderr. A reader that went away (``chat | head``)
    ends the session as a quit."""

    def __init__(self) -> None:
        self.out = sys.stdout.buffer
        self.broken = threading.Event()

    def line(self, raw: bytes) -> None:
        if self.broken.is_set():
            return
        try:
            self.out.write(raw + b"\n")
            self.out.flush()
        except BrokenPipeError:
            # Nobody reads: drop output from now on (and at exit, when Python flushes).
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.out.fileno())
            os.close(devnull)
            self.broken.set()

    def notice(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def _read_stdin(sup: Supervisor, finished: threading.Event) -> None:
    lines = LineSplitter()
    try:
        while data := os.read(0, 65536):
            for raw in lines.feed(data):
                text = raw.decode("utf-8", "replace")
                if is_quit(text):
                    sup.quit(text)
                    return
                sup.send(text)
        if rest := lines.rest():
            sup.send(rest.decode("utf-8", "replace"))
        sup.quit()
    except OSError:  # stdin closed under us: as EOF
        sup.quit()
    finally:
        finished.set()


def run(sup: Supervisor, display: PipeDisplay) -> None:
    """Until EOF (or /quit) on stdin and the server's close, or the end of the session."""
    finished = threading.Event()
    threading.Thread(target=_read_stdin, args=(sup, finished), name="chat-stdin",
                     daemon=True).start()
    while not sup.done.wait(0.1):
        if display.broken.is_set():
            sup.quit()
            break
        if finished.is_set():
            break
    sup.wait(sup.quit_wait())
