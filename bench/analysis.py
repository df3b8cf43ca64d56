"""After a measurement: check every line each receiver got, and compute latency percentiles.

A received line is one of:

- **delivered**: exactly ``prefix(sender) + payload + eol``, byte for byte, first time at this
  receiver, from another client (latency = the chunk's kernel receive time minus the send time
  in the payload);
- **duplicated**: a delivered line seen again at the same receiver;
- **echoed**: a client's own message relayed back to it (chatd promises no echo);
- **leaked**: a message from a sender this receiver ignores (``Conn.hidden``, the ignore
  workload), which the server must not deliver to it;
- **control**: a server notice (joins, leaves, numerics), counted, and leave notices kept as
  ``(nick, reason, receive time)``;
- **garbled**: anything else, i.e. not exactly one whole message (a partial line left at the
  end of the measurement counts here too).

``lost`` is, per receiver, the messages other clients sent (less those of the senders it
ignores: they are not due) minus the distinct ones delivered, so a message that only arrived
garbled counts as lost too. ``out_of_order`` counts messages that arrived after a later
message of the same sender. On a multi-node server, latencies of lines whose sender and
receiver are on different nodes (``Conn.node``) are also reported apart (``lat_cross_*``,
``cross_delivered``); on one node there are none.

This runs after the server has stopped, outside the measured time, so it uses both cores: the
receivers are split between this process and a forked child (which sees the arena without a
copy). Each distinct line is classified once; a repeated line costs a dict lookup.
"""

from __future__ import annotations

import os
import pickle
from array import array

from bench.protocols import PAYLOAD_BYTES, looks_like_payload, parse_payload, payload

_CONTROL = 1
_GARBLED = 0
_COUNTS = ("expected", "delivered", "lost", "duplicated", "echoed", "leaked", "garbled",
           "control", "out_of_order")


def _classifier(proto, prefixes: list[bytes]):
    eol = proto.eol
    cut = -len(eol) or None

    def classify(line: bytes):
        parsed = parse_payload(line[:cut][-PAYLOAD_BYTES:])
        if parsed is not None and parsed[0] < len(prefixes):
            if line == prefixes[parsed[0]] + payload(*parsed) + eol:
                return parsed
        if proto.control(line) and not looks_like_payload(line):
            return _CONTROL
        return _GARBLED

    return classify


def analyse(engine, recorders: list, senders: list, sent: list[int]) -> dict:
    """Check the chunks of every recording connection (and free them)."""
    parts = [recorders[0::2], recorders[1::2]] if len(recorders) > 1 else [recorders]
    child = _fork(engine, parts[1], senders, sent) if len(parts) > 1 else None
    result = _part(engine, parts[0], senders, sent)
    latencies, cross = result.pop("latencies"), result.pop("cross_latencies")
    if child is not None:
        other = _join(child)
        for key in (*_COUNTS, "departures"):
            result[key] += other[key]
        latencies += other.pop("latencies")
        cross += other.pop("cross_latencies")
        result["last_ts"] = max(result["last_ts"], other["last_ts"])
    for conn in recorders:
        conn.chunks = []
    cross_stats = {k.replace("lat_", "lat_cross_"): v for k, v in percentiles(cross).items()}
    del cross_stats["lat_cross_sample"]
    return {**result, **percentiles(latencies + cross), **cross_stats,
            "cross_delivered": len(cross)}


def _fork(engine, recorders, senders, sent):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: analyse our half on whichever core is free, send it back
        code = 1
        try:
            os.close(read_end)
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(_part(engine, recorders, senders, sent), pipe, protocol=5)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def _join(child) -> dict:
    pid, read_end = child
    with os.fdopen(read_end, "rb") as pipe:
        try:
            result = pickle.load(pipe)
        except EOFError:
            result = None
    _, status = os.waitpid(pid, 0)
    if result is None or status:
        raise RuntimeError(f"analysis child failed (status {status})")
    return result


def _part(engine, recorders: list, senders: list, sent: list[int]) -> dict:
    sender_of = {conn.idx: s for s, conn in enumerate(senders)}
    classify = _classifier(engine.proto, [engine.proto.prefix(conn) for conn in senders])
    cache: dict = {}
    total = sum(sent)
    counts = dict.fromkeys(_COUNTS, 0)
    same, cross = array("q"), array("q")
    departures: list = []
    last_ts = 0
    for conn in recorders:
        own = sender_of.get(conn.idx)
        # where each sender's latencies go, as seen by this receiver: same node or across
        sinks = [cross if sender.node != conn.node else same for sender in senders]
        got, newest = _receiver(engine, conn, own, len(senders), classify, cache, counts,
                                sinks, departures)
        expected = total - (sent[own] if own is not None else 0) - _withheld(conn, sent)
        counts["expected"] += expected
        counts["delivered"] += got
        counts["lost"] += max(0, expected - got)
        last_ts = max(last_ts, newest)
    return {**counts, "latencies": same, "cross_latencies": cross, "departures": departures,
            "last_ts": last_ts}


def _withheld(conn, sent: list[int]) -> int:
    """Messages not due at ``conn``: those of the senders it ignores."""
    return sum(sent[s] for s in conn.hidden)


def _receiver(engine, conn, own, n_senders, classify, cache, counts, sinks, departures):
    """One receiver's stream: returns (distinct messages delivered, latest delivery time).
    ``sinks[s]`` is the array that takes sender ``s``'s latencies.

    The fast pass assumes what a correct server does: each sender's messages arrive once and
    in order, none of the receiver's own and none of the senders it ignores (``conn.hidden``).
    The first line that breaks this makes it start over with :func:`_exact`, which keeps a set
    of the lines seen.
    """
    marks = [(sink, len(sink)) for sink in {id(sink): sink for sink in sinks}.values()]
    local = dict.fromkeys(("garbled", "control"), 0)
    found: list = []
    last_seq = [-1] * n_senders
    if own is not None:
        last_seq[own] = 1 << 62  # any message of our own takes the slow path
    for s in conn.hidden:
        last_seq[s] = 1 << 62  # and so does any message of a sender we ignore
    rest = b""
    last_ts = 0
    got = 0
    appends = [sink.append for sink in sinks]
    chunk_bytes = engine.chunk_bytes
    get = cache.get
    for chunk in conn.chunks:
        ts, data = chunk[0], chunk_bytes(chunk)
        lines = (rest + data).split(b"\n") if rest else data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            info = get(line)
            if info is None:
                info = cache[line] = classify(line)
            if info.__class__ is tuple:
                sender, seq, sent_ts = info
                if seq <= last_seq[sender]:
                    for sink, mark in marks:
                        del sink[mark:]
                    return _exact(engine, conn, own, n_senders, classify, cache, counts,
                                  sinks, departures)
                last_seq[sender] = seq
                appends[sender](ts - sent_ts)
                got += 1
                last_ts = ts
            elif info == _CONTROL:
                local["control"] += 1
                left = engine.proto.departure(line)
                if left:
                    found.append((*left, ts))
            else:
                local["garbled"] += 1
    counts["garbled"] += local["garbled"] + (1 if rest else 0)
    counts["control"] += local["control"]
    departures += found
    return got, last_ts


def _exact(engine, conn, own, n_senders, classify, cache, counts, sinks, departures):
    """As :func:`_receiver`, for a stream with duplicates, echoes, leaks or reordering."""
    hidden = conn.hidden
    seen = set()
    last_seq = [-1] * n_senders
    rest = b""
    last_ts = 0
    for chunk in conn.chunks:
        ts, data = chunk[0], engine.chunk_bytes(chunk)
        lines = (rest + data).split(b"\n") if rest else data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            info = cache.get(line)
            if info is None:
                info = cache[line] = classify(line)
            if info.__class__ is tuple:
                sender, seq, sent_ts = info
                if line in seen:
                    counts["duplicated"] += 1
                elif sender == own:
                    counts["echoed"] += 1
                elif sender in hidden:
                    counts["leaked"] += 1
                else:
                    seen.add(line)
                    sinks[sender].append(ts - sent_ts)
                    if seq < last_seq[sender]:
                        counts["out_of_order"] += 1
                    else:
                        last_seq[sender] = seq
                    last_ts = ts
            elif info == _CONTROL:
                counts["control"] += 1
                left = engine.proto.departure(line)
                if left:
                    departures.append((*left, ts))
            else:
                counts["garbled"] += 1
    if rest:
        counts["garbled"] += 1
    return len(seen), last_ts


#: Above this many latencies, p50 and p99 come from an evenly spaced sample of this size
#: (sorting 12 million ints takes seconds on the benchmark machine); max is always exact.
SAMPLE = 2_000_000


def percentiles(latencies_ns) -> dict:
    """p50/p99/max in ms (None when there are none), and how many values p50/p99 came from."""
    n = len(latencies_ns)
    if not n:
        return {"lat_p50_ms": None, "lat_p99_ms": None, "lat_max_ms": None, "lat_sample": 0}
    step = -(-n // SAMPLE)
    sample = sorted(latencies_ns[::step])

    def at(q: float) -> float:
        return round(sample[min(len(sample) - 1, int(q * len(sample)))] / 1e6, 3)

    return {"lat_p50_ms": at(0.50), "lat_p99_ms": at(0.99),
            "lat_max_ms": round(max(latencies_ns) / 1e6, 3), "lat_sample": len(sample)}
