"""Bringing many clients into the room: ``grow`` (connect and register), ``settle`` (wait until
every join has been announced and the server has gone quiet) and ``broadcast`` (one line that
every client must receive, timed with kernel receive timestamps).

Connection 0 is always connected alone first: it is the observer that counts the join notices
of everyone after it, which is how ``settle`` knows the server has taken them all in. The naive
server announces nothing, so there the server's thread count (one per accepted client) stands
in; ngircd's and chatd-irc's connect crowds share no channel, so registered is in. Runs in the
load generator's thread.
"""

from __future__ import annotations

import time

from bench.loadgen import Engine


class StepFailed(Exception):
    pass


def _accepted(engine: Engine, server) -> int:
    """How many clients the server has taken in (naive: one thread each, plus its main)."""
    if engine.proto.silent:
        return min(engine.ready, server.stats()["threads"] - 1)
    return engine.heard


def _check(engine: Engine, server, deadline: float, what: str) -> None:
    if engine.dropped:
        idx, reason, tail = engine.dropped[0]
        state = "running" if server.alive() else f"exited ({server.proc.returncode})"
        raise StepFailed(f"{what}: {len(engine.dropped)} connection(s) lost, first #{idx}: "
                         f"{reason}; last bytes {tail[-120:]!r}; server {state}; "
                         f"server log: {server.log_tail(600)!r}")
    if not server.alive():
        raise StepFailed(f"{what}: server exited ({server.proc.returncode}): {server.log_tail(400)}")
    if time.monotonic() > deadline:
        raise StepFailed(f"{what}: timed out")


def grow(engine: Engine, server, total: int, timeout: float, **sockopts) -> float:
    """Connect until ``total`` clients are registered; returns the seconds it took.
    ``sockopts`` (``rcvbuf``, ``mss``) apply to the new connections."""
    start = time.monotonic()
    deadline = start + timeout
    proto = engine.proto
    while engine.ready < total:
        _check(engine, server, deadline, f"connecting client {engine.ready + 1} of {total}")
        first = engine.ready == 0  # the observer comes first, alone
        registering = len(engine.conns) - engine.ready
        unanswered = len(engine.conns) - _accepted(engine, server)
        while (len(engine.conns) < total and registering < (1 if first else proto.concurrency)
               and unanswered < (1 if first else proto.backlog)):
            try:
                engine.open_conn(**sockopts)
            except OSError as exc:
                raise StepFailed(f"connect #{len(engine.conns)}: {exc}") from exc
            registering += 1
            unanswered += 1
        engine.poll(0.02)
    return time.monotonic() - start


def settle(engine: Engine, server, total: int, timeout: float, quiet: float = 0.3) -> float:
    """Wait until all ``total`` clients are in the room and nothing has arrived for ``quiet``
    seconds; returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while not _all_in(engine, server, total):
        _check(engine, server, deadline, f"settling {total} clients")
        engine.poll(0.02)
    quiet_ns = int(quiet * 1e9)
    while time.time_ns() - engine.last_rx < quiet_ns:
        _check(engine, server, deadline, f"waiting for quiet with {total} clients")
        engine.poll(0.02)
    return time.monotonic() - start


def _all_in(engine: Engine, server, total: int) -> bool:
    if engine.proto.silent:
        return _accepted(engine, server) >= total
    if engine.proto.join_marker is None:  # no shared room: registered is all there is
        return engine.ready >= total
    return engine.joins >= total - 1


def broadcast(engine: Engine, server, send, marker: bytes, expect: int, timeout: float) -> dict:
    """Call ``send()`` (which makes the server send ``marker`` to ``expect`` of our clients)
    and time until the last of them has it. Returns ms to the last and the median client."""
    for conn in engine.conns:
        conn.bcast_ts = 0
    engine.bcast_hits = 0
    engine.bmarker = marker
    t0 = time.time_ns()
    send()
    deadline = time.monotonic() + timeout
    while engine.bcast_hits < expect and time.monotonic() < deadline and not engine.dropped:
        engine.poll(0.02)
    engine.bmarker = None
    times = sorted(c.bcast_ts - t0 for c in engine.conns if c.bcast_ts)
    return {"received": len(times), "expected": expect,
            "ms": round(times[-1] / 1e6, 3) if times else None,
            "p50_ms": round(times[len(times) // 2] / 1e6, 3) if times else None}


def echo_all(engine: Engine, server, marker: bytes, timeout: float) -> dict:
    """For a crowd that no one line reaches (``proto.broadcast`` None: chatd-irc's, in no
    room): every client sends ``proto.echo(marker)`` and the server sends ``marker`` back to
    each alone; timed from the first send to the last client's kernel receive time."""
    line = engine.proto.echo(marker)

    def send() -> None:
        for conn in engine.conns:
            engine.send(conn, line)

    return broadcast(engine, server, send, marker, engine.alive(), timeout)


def chat_broadcast(engine: Engine, server, marker: bytes, timeout: float) -> dict:
    """What client 0 sends so that every client gets ``marker`` (a chat line to the room
    everyone is in; for ngircd's crowd, an operator's server-wide NOTICE)."""
    first = engine.conns[0]
    line = engine.proto.broadcast(marker)
    expect = engine.alive() - (0 if engine.proto.hears_own else 1)
    return broadcast(engine, server, lambda: engine.send(first, line), marker, expect, timeout)
