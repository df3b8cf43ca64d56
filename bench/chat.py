"""The chat workloads: **fanout** (C clients, S senders, M messages each, at full speed within
an in-flight window or at a fixed rate) and **slow** (20 clients at a fixed rate, with and
without one extra client that never reads). The **cluster** workload is fanout on a server
with several endpoints (bench/clusters.py): the engine spreads the clients round-robin over
them, and the analysis reports cross-node latency apart; one endpoint is the plain case.

Each measurement starts a fresh server, brings the clients in (crowd.py), switches them to
recording, drives the senders (:func:`drive`), then stops the server and checks every line
(analysis.py). Runs in the load generator's thread.

**metrics** is fanout on chatd with its Prometheus endpoint on, twice in the same run: once
alone, once while a thread of the load generator scrapes ``/metrics`` every 100 ms
(:class:`Scraper`), three times each, alternated; the ratio of the median deliveries/s (and of
the server's CPU per delivery) is what scraping costs the chat.
"""

from __future__ import annotations

import gc
import select
import statistics
import threading
import time
import urllib.request

from bench.analysis import analyse
from bench.clusters import SERVERS
from bench.crowd import grow, settle
from bench.loadgen import MUTE, RECORD, WATCH, Engine
from bench.protocols import PAYLOAD_BYTES, PROTOCOLS, payload
from bench.report import process_cpu
from bench.servers import Meter

#: The slow client looks like a remote one: a small receive window, and an Ethernet-sized MSS.
#: (On loopback the MSS is 64 KiB, and the kernel would let the server's socket buffer for it
#: grow to tcp_wmem's 4 MiB, hiding the server's own output queue for tens of seconds.)
SLOW_RCVBUF = 4096
SLOW_MSS = 1460
_STALL_NS = 1_000_000_000


class _Senders:
    """The sending side of :func:`drive`: how many messages each sender has sent, and how many
    it may send now (paced: what is due; full speed: what its window allows)."""

    def __init__(self, engine: Engine, conns: list, messages: int, window: int,
                 rate: float | None) -> None:
        n = len(conns)
        self.engine, self.conns, self.messages, self.window = engine, conns, messages, window
        self.sent = [0] * n
        engine.acked = self.acked = [-1] * n
        self.start = time.time_ns()
        self.moved = [self.start] * n  # when acked last moved, per sender
        self.seen = [-1] * n
        self.stalls = 0
        self.interval = 1e9 / rate if rate else 0.0
        self.offsets = [s * self.interval / n for s in range(n)]
        self.frame = engine.proto.frame

    @property
    def done(self) -> bool:
        return sum(self.sent) == len(self.sent) * self.messages

    def send(self, now: int) -> None:
        sent = self.sent
        for s, conn in enumerate(self.conns):
            count = self._allowed(s, now) if sent[s] < self.messages else 0
            if count > 0:
                first = sent[s]
                self.engine.send(conn, b"".join(
                    [self.frame(payload(s, q, now)) for q in range(first, first + count)]))
                sent[s] += count

    def _allowed(self, s: int, now: int) -> int:
        sent, acked = self.sent, self.acked
        if self.interval:
            due = int((now - self.start - self.offsets[s]) / self.interval) + 1
            return min(due, self.messages) - sent[s]
        if self.conns[s].outbuf:
            return 0
        if acked[s] != self.seen[s]:
            self.seen[s], self.moved[s] = acked[s], now
        elif now - self.moved[s] > _STALL_NS:  # the watcher lost track (garbled lines)
            acked[s], self.moved[s], self.stalls = sent[s] - 1, now, self.stalls + 1
        return min(self.window - (sent[s] - 1 - acked[s]), self.messages - sent[s])

    def timeout(self, now: int) -> float:
        """How long the loop may wait for input before a sender has something to send."""
        sent, pending = self.sent, range(len(self.sent))
        if self.interval:
            nxt = min(self.start + self.offsets[s] + sent[s] * self.interval
                      for s in pending if sent[s] < self.messages)
            return min(0.01, max(0.0, (nxt - now) / 1e9))
        if any(not self.conns[s].outbuf and sent[s] < self.messages
               and sent[s] - 1 - self.acked[s] < self.window for s in pending):
            return 0
        return 0.01


def drive(engine: Engine, senders: list, recorders: int, messages: int, window: int,
          rate: float | None, idle_s: float, limit_s: float,
          withheld: list[int] | None = None) -> dict:
    """Send ``messages`` from each sender and receive until every recorder has every line
    due to it, the server has sent nothing for ``idle_s`` (after sending ended), or
    ``limit_s``. ``withheld[s]``: how many recorders ignore sender ``s`` (the ignore
    workload), so are not due its lines; without it, every line is due at every other one.

    Full speed (``rate`` None): a sender keeps at most ``window`` messages in flight, as seen
    by the WATCH connection. Paced: sender ``s`` sends message ``k`` at ``start + (k + s/S) /
    rate``, whatever the server does (what it cannot take waits in the load generator).
    """
    out = _Senders(engine, senders, messages, window, rate)
    # bytes of one line of each sender, at every recorder it is due at
    due = [line_bytes(engine.proto, c) * (recorders - 1 - hid)
           for c, hid in zip(senders, withheld or [0] * len(senders))]
    hard = time.monotonic() + limit_s
    end_send, outcome = None, "complete"
    while True:
        now = time.time_ns()
        if end_send is None:
            out.send(now)
            end_send = now if out.done else None
        if end_send is not None and engine.rx_bytes >= sum(
                k * size for k, size in zip(out.sent, due)):
            _drain(engine)
            break
        if time.monotonic() > hard:
            outcome = "time limit"
            break
        if (end_send or not rate) and now - max(engine.last_rx, out.start) > idle_s * 1e9:
            outcome = "server idle" if end_send is not None else "stalled"
            break
        engine.poll(0.01 if end_send is not None else out.timeout(now))
    return {"sent": out.sent, "start": out.start, "end_send": end_send or time.time_ns(),
            "window_stalls": out.stalls, "outcome": outcome}


def line_bytes(proto, conn) -> int:
    """Bytes of one relayed chat line from ``conn``, as every other client receives it."""
    return len(proto.prefix(conn)) + PAYLOAD_BYTES + len(proto.eol) + 1


def _drain(engine: Engine, quiet_ns: int = 50_000_000, limit: float = 1.0) -> None:
    """Everything expected is in: read on briefly to catch extra lines (duplicates)."""
    deadline = time.monotonic() + limit
    while time.time_ns() - engine.last_rx < quiet_ns and time.monotonic() < deadline:
        engine.poll(0.01)


def chat_round(name: str, core, clients: int, senders: int, messages: int, window: int,
               rate: float | None, opts, slow_client: bool = False, during=None,
               kind=None, proto=None) -> dict:
    """One measurement on a fresh server; returns the result fields (not yet labelled).
    ``during(server)``, if given, starts something that runs while the senders send and
    returns the call that stops it, which returns fields for the result (the scraper).
    ``kind`` and ``proto``, if given, stand for ``SERVERS[name]`` and ``PROTOCOLS[name]()``
    (bench/accounts.py: chatd with accounts made, clients that log in while they join)."""
    server = (kind or SERVERS[name])(core).start()
    engine = Engine(proto or PROTOCOLS[name](), server.ports)
    try:
        setup_s, mute = _bring_in(engine, server, clients, slow_client, opts)
        talkers, recorders = _roles(engine, clients, senders, rate, mute, messages)
        withheld = _withheld(recorders, talkers)
        meter = Meter(server)
        stop_during = during(server) if during is not None else None
        gc.disable()  # no collector pauses in the measured loop (it allocates little anyway)
        try:
            run = drive(engine, talkers, len(recorders), messages, window, rate, opts.idle_s,
                        opts.round_limit, withheld)
        finally:
            gc.enable()
            extra = stop_during() if stop_during is not None else {}
        usage = meter.stop()
        usage["link_breaks"] = server.link_breaks()  # before stop() breaks them on purpose
        slow = _slow_facts(server, mute) if mute is not None else None
        reads = sum(len(conn.chunks) for conn in recorders)
    finally:
        server.stop()
        engine.close()
        server.cleanup()
    checked = analyse(engine, recorders, talkers, run["sent"])
    engine.disarm()
    result = {**_summarise(checked, run, rate, setup_s), **_per_node(usage, checked, run),
              **usage, **extra, "source": server.source, "nodes": len(server.ports),
              "dropped": len(engine.dropped),
              "lines_per_read": round(checked["delivered"] / reads, 2) if reads else None}
    if slow is not None:
        gone = sorted((ts, r) for who, r, ts in checked["departures"]
                      if not mute.nick or who == mute.nick)
        result.update({"slow_disconnected": slow["closed"],
                       "slow_reason": slow["logged"] or (gone[0][1] if gone else None),
                       "slow_dropped_after_s": round((gone[0][0] - run["start"]) / 1e9, 3)
                       if gone else None, "sendq_exceeded_logged": slow["sendq_logged"]})
    return result


def _bring_in(engine: Engine, server, clients: int, slow_client: bool, opts):
    """Connect the clients (and the slow one, last); returns (seconds, slow conn or None)."""
    setup_s = grow(engine, server, clients, opts.step_timeout)
    mute = None
    if slow_client:
        grow(engine, server, clients + 1, opts.step_timeout, rcvbuf=SLOW_RCVBUF, mss=SLOW_MSS)
        mute = engine.conns[clients]
    settle(engine, server, len(engine.conns), opts.step_timeout)
    if not server.linked():  # a link broke during the join storm: wait for it, and its burst
        _relink(server, opts.step_timeout)
        settle(engine, server, len(engine.conns), opts.step_timeout)
    return setup_s, mute


def _relink(server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not server.linked():
        if time.monotonic() > deadline or not server.alive():
            raise RuntimeError(f"{server.name}: nodes not linked again after {timeout}s: "
                               f"{server.log_tail()}")
        time.sleep(0.2)


def _roles(engine: Engine, clients: int, senders: int, rate, mute, messages: int):
    """Senders are the first clients, all clients record, the first non-sender also watches
    (full speed); the slow client goes mute. Arms the arena; returns (senders, recorders)."""
    talkers, recorders = engine.conns[:senders], engine.conns[:clients]
    watcher = engine.conns[senders] if rate is None else None
    for conn in recorders:
        engine.set_mode(conn, WATCH if conn is watcher else RECORD)
    if mute is not None:
        engine.set_mode(mute, MUTE)
    per_round = messages * sum(line_bytes(engine.proto, c) for c in talkers)
    engine.arm(int(per_round * (len(recorders) - 1) * 1.05)
               + len(recorders) * engine.recv_size + (8 << 20))
    return talkers, recorders


def _withheld(recorders: list, talkers: list) -> list[int]:
    """Per sender: how many recorders ignore it (``Conn.hidden``, set while they registered:
    bench/ignore.py), so that :func:`drive` does not wait for lines the server must not send.
    All 0 in every other workload."""
    return [sum(1 for conn in recorders if s in conn.hidden) for s in range(len(talkers))]


def _per_node(usage: dict, checked: dict, run: dict) -> dict:
    """Cross-node latency, each process's CPU as one readable cell, Redis commands per
    message sent (None unless the server reads its Redis's INFO commandstats)."""
    redis, sent = usage["redis_commands"], sum(run["sent"])
    keys = ("cross_delivered", "lat_cross_p50_ms", "lat_cross_p99_ms", "lat_cross_max_ms")
    return {**{k: checked[k] for k in keys},
            "process_cpu": process_cpu(usage["process_cpu_share"]),
            "redis_commands_per_message": round(redis / sent, 3)
            if redis is not None and sent else None}


def _slow_facts(server, mute) -> dict:
    """Before the server stops: did it close the slow client, and what do its logs say."""
    log = server.log_text() if server.name.startswith("chatd") else ""  # chatd-cluster too
    return {"closed": _slow_fate(mute), "logged": server.departure_logged(mute.nick),
            "sendq_logged": log.count('"sendq_exceeded"')}


def _summarise(checked: dict, run: dict, rate, setup_s: float) -> dict:
    end = max(checked["last_ts"], run["end_send"] if rate else 0)
    duration = max(end - run["start"], 1) / 1e9
    keys = ("expected", "delivered", "lost", "duplicated", "garbled", "echoed", "leaked",
            "out_of_order", "control", "lat_p50_ms", "lat_p99_ms", "lat_max_ms", "lat_sample")
    return {"sent": sum(run["sent"]), **{k: checked[k] for k in keys},
            "duration_s": round(duration, 3),
            "deliveries_per_s": round(checked["delivered"] / duration),
            "outcome": run["outcome"], "window_stalls": run["window_stalls"],
            "setup_s": round(setup_s, 3)}


def _slow_fate(conn, timeout: float = 3.0) -> bool:
    """Did the server close the client that never read? (Reads what is left to find out.)"""
    if conn.closed:
        return True
    sock = conn.sock
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([sock], [], [], 0.1)[0]:
            continue
        try:
            if not sock.recv(65536):
                return True
        except OSError:
            return True
    return False


def fanout(name: str, core, opts, clients: int, senders: int, messages: int,
           rate: float | None) -> list[dict]:
    result = chat_round(name, core, clients, senders, messages, opts.window, rate, opts)
    return [{"clients": clients, "senders": senders, "messages": messages,
             "window": None if rate else opts.window, "rate": rate, **result}]


def slow(name: str, core, opts, clients: int, rate: float, seconds: float) -> list[dict]:
    messages = int(rate * seconds)
    base = chat_round(name, core, clients, clients, messages, 0, rate, opts)
    loaded = chat_round(name, core, clients, clients, messages, 0, rate, opts, slow_client=True)
    ratio = (loaded["deliveries_per_s"] / base["deliveries_per_s"]
             if base["deliveries_per_s"] else None)
    p99 = (loaded["lat_p99_ms"] / base["lat_p99_ms"]
           if base["lat_p99_ms"] and loaded["lat_p99_ms"] is not None else None)
    return [{"clients": clients, "rate": rate, "seconds": seconds,
             "base_dps": base["deliveries_per_s"], "slow_dps": loaded["deliveries_per_s"],
             "dps_ratio": round(ratio, 4) if ratio is not None else None,
             "base_p99_ms": base["lat_p99_ms"], "slow_p99_ms": loaded["lat_p99_ms"],
             "p99_ratio": round(p99, 3) if p99 is not None else None,
             "base_lost": base["lost"], "slow_lost": loaded["lost"],
             "slow_lost_pct": round(100 * loaded["lost"] / max(1, loaded["expected"]), 2),
             "source": loaded["source"],
             "slow_disconnected": loaded["slow_disconnected"], "slow_reason": loaded["slow_reason"],
             "slow_dropped_after_s": loaded["slow_dropped_after_s"],
             "sendq_exceeded_logged": loaded["sendq_exceeded_logged"],
             "base_garbled": base["garbled"], "slow_garbled": loaded["garbled"],
             "loadgen_cpu_share": max(base["loadgen_cpu_share"], loaded["loadgen_cpu_share"]),
             "other_cpu_share": max(base["other_cpu_share"], loaded["other_cpu_share"])}]


class Scraper:
    """GET /metrics every ``interval`` seconds on a thread until stopped (metrics workload).
    A scrape is a few kilobytes, so the thread costs the load generator well under 1 %."""

    def __init__(self, port: int, interval: float) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.interval = interval
        self.times: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def start(self) -> Scraper:
        self._thread.start()
        return self

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as reply:
                    reply.read()
                self.times.append(time.monotonic() - started)
            except OSError:
                self.failures += 1

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(10)
        times = sorted(self.times)
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))] if times else None
        return {"scrapes": len(times), "scrape_failures": self.failures,
                "scrape_p99_ms": round(p99 * 1000, 2) if p99 is not None else None}


#: Rounds of each kind per metrics run, alternated (alone, scraped, alone, ...): a round on a
#: fresh server swings by +-20 % on this machine, far more than scraping could cost, so the
#: ratio is of the medians, and drift over the run falls on both kinds alike.
METRICS_PAIRS = 3


def metrics(name: str, core, opts, clients: int, senders: int, messages: int,
            interval: float) -> list[dict]:
    """Fan-out at full speed on chatd-metrics, not scraped and scraped every ``interval``
    seconds, :data:`METRICS_PAIRS` rounds of each, alternated: the ratio of the medians of
    deliveries/s (issue 13: >= 0.97), and of the server's CPU per delivery, which the
    machine's noise sways less (scraping costs CPU; deliveries/s also move with scheduling)."""
    pairs = 1 if opts.quick else METRICS_PAIRS
    base, scraped = [], []
    for _ in range(pairs):
        base.append(chat_round("chatd-metrics", core, clients, senders, messages, opts.window,
                               None, opts))
        scraped.append(chat_round("chatd-metrics", core, clients, senders, messages,
                                  opts.window, None, opts,
                                  during=lambda server: Scraper(server.metrics_port,
                                                                interval).start().stop))
    base_dps = statistics.median(r["deliveries_per_s"] for r in base)
    scraped_dps = statistics.median(r["deliveries_per_s"] for r in scraped)
    base_cpu = statistics.median(_cpu_per_delivery(r) for r in base)
    scraped_cpu = statistics.median(_cpu_per_delivery(r) for r in scraped)
    ratio = scraped_dps / base_dps if base_dps else None
    times = [r["scrape_p99_ms"] for r in scraped if r["scrape_p99_ms"] is not None]
    return [{"clients": clients, "senders": senders, "messages": messages,
             "interval_s": interval, "pairs": pairs, "base_dps": round(base_dps),
             "scraped_dps": round(scraped_dps),
             "dps_ratio": round(ratio, 4) if ratio is not None else None,
             "base_rounds_dps": [r["deliveries_per_s"] for r in base],
             "scraped_rounds_dps": [r["deliveries_per_s"] for r in scraped],
             "base_ns_per_delivery": round(base_cpu, 1),
             "scraped_ns_per_delivery": round(scraped_cpu, 1),
             "cpu_ratio": round(base_cpu / scraped_cpu, 4) if scraped_cpu else None,
             "base_p99_ms": statistics.median(r["lat_p99_ms"] for r in base),
             "scraped_p99_ms": statistics.median(r["lat_p99_ms"] for r in scraped),
             "lost": max(r["lost"] for r in base + scraped),
             "garbled": max(r["garbled"] for r in base + scraped),
             "scrapes": sum(r["scrapes"] for r in scraped),
             "scrape_failures": sum(r["scrape_failures"] for r in scraped),
             "scrape_p99_ms": max(times) if times else None, "source": scraped[0]["source"],
             "loadgen_cpu_share": max(r["loadgen_cpu_share"] for r in base + scraped)}]


def _cpu_per_delivery(result: dict) -> float:
    """The server's CPU nanoseconds per line delivered in one round."""
    return result["server_cpu_s"] * 1e9 / max(1, result["delivered"])
