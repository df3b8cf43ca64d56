"""The **history** workload (issue 12): what room history costs and how joining a busy room
with a replay behaves.

- fan-out C=200 S=10 at full speed on ``chatd`` (history on, as shipped: every line stored)
  and on ``chatd-nohistory`` (``history_lines = 0``), in the same run: the ratio of their
  deliveries/s (chat.py does the measuring; cli.py plans both).
- :func:`join_replay`: one client posts numbered lines into room ``busy`` at a steady rate
  (1,000 lines/s) while another connects, ``/join busy`` and reads the replay of the last
  ``history_on_join`` (10) lines and then the live lines, ten times a second. Reported: the
  time from sending ``/join`` to the end of the replay (p50, p99, max), and every seam error:
  a number missing or seen twice between the replay and the live lines that follow it.

Runs in the load generator's thread, but for the paced poster (a thread of its own).
"""

from __future__ import annotations

import re
import socket
import threading
import time

from bench.clusters import SERVERS

ROOM = "busy"
_LIVE = re.compile(rb"<poster> n (\d+)")
_REPLAYED = re.compile(rb"\[[^]]+\] <poster> n (\d+)")


class _Lines:
    """A line reader over a blocking socket (the bench's own, not the tests')."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def line(self, deadline: float) -> bytes:
        while b"\n" not in self.buf:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def until(self, prefix: bytes, deadline: float) -> bytes:
        while True:
            line = self.line(deadline)
            if line.startswith(prefix):
                return line


def _connect(port: int, nick: str | None = None,
             room: str = ROOM) -> tuple[socket.socket, _Lines]:
    """A connection; with ``nick``, named and in ``room`` (bench/upgrade.py uses it too)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lines = _Lines(sock)
    if nick:
        sock.sendall(f"/nick {nick}\n/join {room}\n".encode())
        lines.until(b"*** you joined", time.monotonic() + 5)
    return sock, lines


def post(sock: socket.socket, rate: float, stop: threading.Event, sent: list,
         word: bytes = b"n") -> None:
    """Send ``WORD 0``, ``WORD 1``, ... at ``rate`` lines/s until ``stop``; ``sent[0]`` counts
    them (bench/upgrade.py posts this way too)."""
    start, k = time.monotonic(), 0
    while not stop.is_set():
        due = start + k / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        sock.sendall(b"%s %d\n" % (word, k))
        k += 1
        sent[0] = k


def _one_join(port: int, live_lines: int, replay: int) -> tuple[float, int, int]:
    """-> (ms from /join to the end of the replay, lines replayed, seam errors)."""
    sock, lines = _connect(port)
    try:
        deadline = time.monotonic() + 10
        lines.until(b"*** you are ", deadline)
        t0 = time.perf_counter()
        sock.sendall(f"/join {ROOM}\n".encode())
        lines.until(f"*** history of {ROOM} (".encode(), deadline)
        replayed = []
        while (line := lines.line(deadline)) != b"*** end of history":
            m = _REPLAYED.fullmatch(line)
            if m:
                replayed.append(int(m[1]))
        join_ms = (time.perf_counter() - t0) * 1000
        seen = list(replayed)
        while len(seen) < len(replayed) + live_lines:
            m = _LIVE.fullmatch(lines.line(deadline))
            if m:
                seen.append(int(m[1]))
        errors = sum(1 for a, b in zip(seen, seen[1:]) if b != a + 1)
        errors += len(replayed) != replay
        return join_ms, len(replayed), errors
    finally:
        sock.close()


def join_replay(name: str, core, opts, rate: float = 1000.0, seconds: float = 5.0,
                replay: int = 10, live_lines: int = 50) -> list[dict]:
    server = SERVERS[name](core).start()
    stop, sent = threading.Event(), [0]
    poster = None
    try:
        sock, _ = _connect(server.port, "poster")
        poster = threading.Thread(target=post, args=(sock, rate, stop, sent), daemon=True)
        poster.start()
        posting = time.monotonic()
        while sent[0] < replay * 2:  # the room has more than a replay's worth
            time.sleep(0.01)
        times, errors, joins = [], 0, 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            began = time.monotonic()
            join_ms, _, seam_errors = _one_join(server.port, live_lines, replay)
            times.append(join_ms)
            errors += seam_errors
            joins += 1
            time.sleep(max(0.0, 0.1 - (time.monotonic() - began)))
        stop.set()
        poster.join(5)
        sock.close()
        posted_rate = sent[0] / (time.monotonic() - posting)
    finally:
        stop.set()
        server.stop()
        server.cleanup()
    times.sort()
    pick = lambda q: round(times[min(len(times) - 1, int(q * len(times)))], 2)  # noqa: E731
    return [{"rate": rate, "replay": replay, "joins": joins, "seam_errors": errors,
             "join_p50_ms": pick(0.5), "join_p99_ms": pick(0.99), "join_max_ms": round(times[-1], 2),
             "posted_per_s": round(posted_rate), "source": server.source}]
