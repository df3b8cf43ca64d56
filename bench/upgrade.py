"""The **upgrade** workload (issue 11): what ``chatctl upgrade`` costs with N clients connected.

A crowd of N clients sits in the lobby (crowd.py, the connect workload's clients). In room
``gap`` one client posts numbered lines at a steady rate (200 lines/s) and another reads them;
then ``chatctl --json upgrade`` has the installed chatd take everything over (in place, same
pid: chatd/lifecycle/reexec.py). Reported:

- ``handover_ms``: chatd's own figure (``seconds`` in the reply: from the freeze to the new
  code serving), and ``chatctl_ms``, the whole command as the operator sees it (the dry start
  of the new code included);
- ``max_gap_ms``: the longest time the reader waited between two consecutive lines around the
  upgrade (at 200 lines/s the normal gap is 5 ms), and ``lost``/``duplicated`` lines;
- ``kept``: the clients the new process took over (the crowd, the poster and the reader).

Runs in the load generator's thread (the crowd is polled there), with the poster, the reader
and chatctl on threads of their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

from bench.crowd import grow, settle
from bench.history import _connect, post
from bench.loadgen import Engine
from bench.protocols import CROWD_PROTOCOLS
from bench.servers import SERVERS, VENV_BIN

ROOM = "gap"


def _reader(lines, stop: threading.Event, seen: list) -> None:
    """(monotonic time, number) of each of the poster's lines, until stopped."""
    while not stop.is_set():
        try:
            line = lines.line(time.monotonic() + 0.5)
        except (TimeoutError, OSError):
            continue
        if line.startswith(b"<poster> g "):
            seen.append((time.monotonic(), int(line[11:])))


def upgrade(name: str, core, opts, clients: int, rate: float = 200.0) -> list[dict]:
    server = SERVERS[name](core).start()
    engine = Engine(CROWD_PROTOCOLS[name](), server.port)
    new_pid = None
    stop = threading.Event()
    try:
        grow(engine, server, clients, opts.step_timeout)
        settle(engine, server, clients, opts.step_timeout)
        poster, _ = _connect(server.port, "poster", ROOM)
        reader, reader_lines = _connect(server.port, "reader", ROOM)
        sent, seen = [0], []
        threads = [threading.Thread(target=post, args=(poster, rate, stop, sent, b"g")),
                   threading.Thread(target=_reader, args=(reader_lines, stop, seen))]
        for thread in threads:
            thread.start()
        _pump(engine, 1.0)
        reply: dict = {}
        command = threading.Thread(target=_chatctl_upgrade, args=(server, reply))
        began = time.monotonic()
        command.start()
        while command.is_alive():
            engine.poll(0.02)
        chatctl_ms = (time.monotonic() - began) * 1000
        _pump(engine, 1.0)
        stop.set()
        for thread in threads:
            thread.join(5)
        poster.close()
        reader.close()
        result = reply.get("result") or {}
        new_pid = result.get("new_pid")
    finally:
        stop.set()
        engine.close()
        if new_pid and new_pid != server.proc.pid:  # a chatd that hands over to a new process
            _terminate(new_pid)
        server.stop()
        server.cleanup()
    if "error" in reply:
        raise RuntimeError(f"chatctl upgrade failed: {reply['error']}")
    numbers = [n for _, n in seen]
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:])]
    return [{"clients": clients, "rate": rate, "kept": result.get("clients"),
             "handover_ms": round(result.get("seconds", 0) * 1000, 1),
             "chatctl_ms": round(chatctl_ms, 1),
             "max_gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
             "lost": (numbers[-1] - numbers[0] + 1 - len(set(numbers))) if numbers else None,
             "duplicated": len(numbers) - len(set(numbers)), "lines": len(numbers),
             "source": server.source}]


def _pump(engine: Engine, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        engine.poll(0.02)


def _chatctl_upgrade(server, reply: dict) -> None:
    proc = subprocess.run([str(VENV_BIN / "chatctl"), "--socket", str(server.admin_socket),
                           "--json", "upgrade", "--wait", "60"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:
        reply["result"] = json.loads(proc.stdout)
    else:
        reply["error"] = proc.stderr.strip() or f"exit {proc.returncode}"


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
