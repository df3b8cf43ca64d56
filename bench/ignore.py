"""The ignore workload (issue 26; chatd only): what ``/ignore`` costs the fan-out.

chatd answers ``/ignore NICK`` with ``*** ignoring NICK`` and from then on does not deliver
NICK's room lines (``<NICK> text``) to that client; everyone else still gets them
(docs/protocol.md §13.3). A room keeps the set of its members that ignore someone and builds
each of them its own filtered buffer per flush, so a room where nobody ignores anyone should
pay next to nothing, and one with a few ignorers a little.

The accounts fan-out's shape (bench/accounts.py), through the same code (chat.chat_round):
the fanout workload's C=200 S=10 at full speed, in pairs of rounds alternated (nobody,
ignoring, nobody, ...), each on a fresh chatd:

- **nobody** ignores anyone: the fanout workload's round, byte for byte;
- **ignoring**: :data:`IGNORERS` of the clients that do not send (the last ones: never the
  window's watcher, which must see every sender) each send ``/ignore NICK`` for sender
  :data:`IGNORED` as they register, and count as joined only at ``*** ignoring NICK``
  (:class:`Ignoring`), so all of them ignore it before the measurement starts. The
  connection notes the sender it ignores (``Conn.hidden``): the load generator then waits
  for, and the analysis expects, none of that sender's lines at those clients; one that comes
  counts as ``leaked`` (like ``echoed``, a line the server must not send to that client), and
  every other sender's lines must still arrive there once, whole and in order.

Deliveries are the lines actually due: in the ignoring rounds, :data:`IGNORERS` × messages
fewer. Reported: the medians of both kinds' deliveries/s and their ratio (issue 26: at least
0.9), the server's CPU per delivery, p99 latency, and lost, garbled, duplicated, out of order
and leaked lines (worst round).

Runs in the load generator's thread (bench/cli.py).
"""

from __future__ import annotations

import statistics

from bench.chat import chat_round
from bench.protocols import Chatd as ChatdProtocol
from bench.protocols import Refused

#: Clients that ignore one sender in the ignoring rounds (issue 26).
IGNORERS = 20
#: The sender they ignore, by its index in the payload (and connection index: the senders are
#: the first clients, chat._roles). Sender 0 is connection 0, which registers alone before any
#: other client connects (crowd.grow), so its nick is known when the ignorers register.
IGNORED = 0


class Ignoring(ChatdProtocol):
    """chatd guests of which connections ``ignorers`` send ``/ignore NICK`` for connection
    :data:`IGNORED` once they know their own nick (``*** you are``), and are ready only at
    ``*** ignoring NICK``; then the connection notes that sender in ``Conn.hidden``. One per
    round: it learns the ignored nick from that round's connection 0."""

    def __init__(self, ignorers: range) -> None:
        self.ignorers = ignorers
        self.target: bytes | None = None  # the ignored sender's nick, once it registered

    def setup_line(self, conn, line: bytes) -> tuple[bytes, bool]:
        if conn.idx not in self.ignorers:
            reply, ready = super().setup_line(conn, line)
            if ready and conn.idx == IGNORED:
                self.target = conn.nick
            return reply, ready
        if not conn.nick:  # still a plain guest registering
            reply, ready = super().setup_line(conn, line)
            return (self._ignore(), False) if ready else (reply, False)
        if line.rstrip(b"\r") == b"*** ignoring " + self.target:
            conn.hidden = frozenset({IGNORED})
            return b"", True
        if line.startswith(b"*** error: "):
            raise Refused(line.decode(errors="replace"))
        return b"", False

    def _ignore(self) -> bytes:
        if self.target is None:  # crowd.grow brings connection 0 in first, alone
            raise RuntimeError(f"connection {IGNORED} had not registered before an ignorer")
        return b"/ignore %s\n" % self.target


def fanout(name: str, core, opts, clients: int, senders: int, messages: int, pairs: int,
           ignorers: int) -> list[dict]:
    """Fan-out with nobody ignoring anyone and with ``ignorers`` clients ignoring sender
    :data:`IGNORED`, ``pairs`` rounds of each, alternated; one record with the medians and
    their ratio (ignoring ÷ nobody)."""
    if ignorers > clients - senders - 1:  # the first non-sender is the window's watcher
        raise ValueError(f"{ignorers} ignorers do not fit among {clients} clients, "
                         f"{senders} senders and the watcher")
    them = range(clients - ignorers, clients)
    nobody, ignoring = [], []
    for _ in range(pairs):
        nobody.append(chat_round(name, core, clients, senders, messages, opts.window, None,
                                 opts))
        ignoring.append(chat_round(name, core, clients, senders, messages, opts.window, None,
                                   opts, proto=Ignoring(them)))
    return [_record(nobody, ignoring, clients=clients, senders=senders, messages=messages,
                    pairs=pairs, ignorers=ignorers)]


def _record(nobody: list[dict], ignoring: list[dict], **sizes) -> dict:
    """The medians of both kinds and their ratios; errors are the worst round's."""
    both = nobody + ignoring
    med = lambda rounds, key: statistics.median(r[key] for r in rounds)  # noqa: E731
    nobody_dps, ignoring_dps = med(nobody, "deliveries_per_s"), med(ignoring, "deliveries_per_s")
    nobody_ns = statistics.median(_ns_per_delivery(r) for r in nobody)
    ignoring_ns = statistics.median(_ns_per_delivery(r) for r in ignoring)
    return {**sizes, "ignored_sender": IGNORED,
            "nobody_dps": round(nobody_dps), "ignoring_dps": round(ignoring_dps),
            "dps_ratio": round(ignoring_dps / nobody_dps, 4) if nobody_dps else None,
            "nobody_rounds_dps": [r["deliveries_per_s"] for r in nobody],
            "ignoring_rounds_dps": [r["deliveries_per_s"] for r in ignoring],
            "nobody_ns_per_delivery": round(nobody_ns, 1),
            "ignoring_ns_per_delivery": round(ignoring_ns, 1),
            "cpu_ratio": round(nobody_ns / ignoring_ns, 4) if ignoring_ns else None,
            "nobody_p99_ms": med(nobody, "lat_p99_ms"),
            "ignoring_p99_ms": med(ignoring, "lat_p99_ms"),
            "nobody_expected": med(nobody, "expected"),
            "ignoring_expected": med(ignoring, "expected"),
            "nobody_setup_s": med(nobody, "setup_s"), "ignoring_setup_s": med(ignoring, "setup_s"),
            **{key: max(r[key] for r in both)
               for key in ("lost", "garbled", "duplicated", "out_of_order", "leaked")},
            "outcomes": sorted({r["outcome"] for r in both}),
            "source": ignoring[0]["source"],
            "loadgen_cpu_share": max(r["loadgen_cpu_share"] for r in both),
            "other_cpu_share": max(r["other_cpu_share"] for r in both)}


def _ns_per_delivery(result: dict) -> float:
    """The server's CPU nanoseconds per line delivered in one round (lines due only)."""
    return result["server_cpu_s"] * 1e9 / max(1, result["delivered"])
