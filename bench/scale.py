"""The scale workloads: **connect** (idle clients added in steps up to 10,000, one broadcast
after each step that every client must get) and **admin** (chatctl latency with that crowd
connected; chatd only).

The broadcast is one line from client 0 that every client must get: for chatd a chat line to
the lobby (where everybody is), for the naive server its relay to everyone, for ngircd a
server-mask NOTICE from client 0 as an IRC operator (ngircd's crowd joins no channel, see
protocols.NgircdServerWide). chatd-irc's crowd (IRC clients in no room) has no line that
reaches them all: there each client PINGs and the time to the last PONG is ``echo_ms``
(protocols.ChatdIrcCrowd). For chatd the final step also times ``broadcast`` over the admin
socket (what ``chatctl broadcast`` sends), reported as ``admin_bcast_ms``. When both workloads are selected, admin reuses connect's crowd of 10,000
instead of building its own. Runs in the load generator's thread.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import time

from bench.crowd import StepFailed, broadcast, chat_broadcast, echo_all, grow, settle
from bench.loadgen import Engine
from bench.protocols import CROWD_PROTOCOLS
from bench.servers import SERVERS, VENV_BIN, Meter


def connect(name: str, core, opts, steps: list[int], with_admin: bool) -> list[dict]:
    server = SERVERS[name](core).start()
    engine = Engine(CROWD_PROTOCOLS[name](), server.port)
    base = server.stats()
    rows, failure, records = [], None, []
    try:
        for n in steps:
            try:
                rows.append(_step(engine, server, n, base, opts))
            except StepFailed as exc:
                failure = f"at {n}: {exc}"
                break
        top = rows[-1] if rows else None
        if top and name == "chatd":
            top["admin_bcast_ms"] = _admin_broadcast(engine, server, opts)
        if with_admin and name == "chatd":
            records.append(measure_admin(server, engine, opts))
    finally:
        server.stop()
        engine.close()
        server.cleanup()
    top = rows[-1] if rows else {}
    records.insert(0, {
        "steps": rows, "failure": failure, "max_ok": top.get("n", 0),
        "setup_s": round(sum(r["connect_s"] + r["settle_s"] for r in rows), 3),
        "rss_per_conn_kib": top.get("rss_per_conn_kib"), "threads": top.get("threads"),
        "bcast_ms": top.get("bcast_ms"), "admin_bcast_ms": top.get("admin_bcast_ms"),
        "echo_ms": top.get("echo_ms"),
        "base_rss_kib": base["rss_kib"], "source": server.source,
        "loadgen_cpu_share": top.get("loadgen_cpu_share"),
        "server_cpu_share": top.get("server_cpu_share"),
        "other_cpu_share": top.get("other_cpu_share")})
    return records


#: How a step shows that every client is still served, by whether the crowd has a broadcast:
#: (what, how, prefix of the result fields and of the timeout option). One line to everyone,
#: else one echo to each client.
_REACH = {True: ("broadcast", chat_broadcast, "bcast"), False: ("echo", echo_all, "echo")}


def _step(engine: Engine, server, n: int, base: dict, opts) -> dict:
    meter = Meter(server)
    connect_s = grow(engine, server, n, opts.step_timeout)
    settle_s = settle(engine, server, n, opts.step_timeout)
    usage = meter.stop()
    what, reach, key = _REACH[engine.proto.broadcast is not None]
    result = reach(engine, server, b"BCAST-%d-%d" % (n, time.time_ns()),
                   getattr(opts, f"{key}_timeout"))
    if engine.dropped or result["received"] < result["expected"]:
        lost = engine.dropped[0] if engine.dropped else None
        raise StepFailed(f"{what} reached {result['received']} of {result['expected']}"
                         + (f"; dropped #{lost[0]}: {lost[1]} {lost[2][-120:]!r}" if lost else ""))
    return {"n": n, "connect_s": round(connect_s, 3), "settle_s": round(settle_s, 3),
            "rss_kib": usage["server_rss_kib"], "threads": usage["server_threads"],
            "rss_per_conn_kib": round((usage["server_rss_kib"] - base["rss_kib"]) / n, 2),
            f"{key}_ms": result["ms"], f"{key}_p50_ms": result["p50_ms"],
            **{k: usage[k] for k in ("loadgen_cpu_share", "server_cpu_share", "other_cpu_share")}}


def admin_request(path, cmd: str, args: dict | None = None, timeout: float = 30.0):
    """One request on chatd's admin socket (docs/protocol.md §6); returns (seconds, reply)."""
    start = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"id": 1, "cmd": cmd, "args": args or {}}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    return time.perf_counter() - start, json.loads(data)


def _admin_broadcast(engine: Engine, server, opts) -> float | None:
    marker = b"ADMIN-%d" % time.time_ns()
    result = broadcast(engine, server, lambda: admin_request(
        server.admin_socket, "broadcast", {"text": marker.decode()}), marker, engine.alive(),
        opts.bcast_timeout)
    return result["ms"] if result["received"] == result["expected"] else None


def _chatctl(server, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    cmd = [str(VENV_BIN / "chatctl"), "--socket", str(server.admin_socket), *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, timeout=60)
    return time.perf_counter() - start, proc


def measure_admin(server, engine: Engine, opts) -> dict:
    """Median wall time of chatctl commands (a fresh process each, as an admin runs them) and
    of the same requests made directly on the socket."""
    clients = engine.alive()
    timings: dict[str, list[float]] = {}
    entries = None
    for _ in range(opts.admin_repeats):
        for label, args in (("list_json", ("--json", "list")), ("status", ("status",)),
                            ("version", ("--version",))):
            seconds, proc = _chatctl(server, *args)
            if proc.returncode != 0:
                raise RuntimeError(f"chatctl {' '.join(args)}: {proc.stderr.decode()[-300:]}")
            timings.setdefault(label, []).append(seconds)
            if label == "list_json":
                entries = len(json.loads(proc.stdout))
        for cmd in ("list", "status"):
            seconds, reply = admin_request(server.admin_socket, cmd)
            if not reply.get("ok"):
                raise RuntimeError(f"admin {cmd}: {reply}")
            timings.setdefault(f"{cmd}_rpc", []).append(seconds)
    ms = {f"{k}_ms": round(statistics.median(v) * 1000, 1) for k, v in timings.items()}
    return {"workload": "admin", "clients": clients, "list_entries": entries,
            "source": server.source,
            "chatctl_list_json_ms": ms["list_json_ms"], "chatctl_status_ms": ms["status_ms"],
            "chatctl_version_ms": ms["version_ms"], "list_rpc_ms": ms["list_rpc_ms"],
            "status_rpc_ms": ms["status_rpc_ms"]}


def admin(name: str, core, opts, clients: int) -> list[dict]:
    """The admin workload on its own: straight to ``clients`` connections, then measure."""
    server = SERVERS[name](core).start()
    engine = Engine(CROWD_PROTOCOLS[name](), server.port)
    try:
        grow(engine, server, clients, opts.step_timeout)
        settle(engine, server, clients, opts.step_timeout)
        return [measure_admin(server, engine, opts)]
    finally:
        server.stop()
        engine.close()
        server.cleanup()
