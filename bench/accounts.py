"""The accounts workload (issue 25; chatd only): how many logins a second chatd takes on its
one core with argon2id as shipped, and what being logged in costs the fan-out.

**logins**: a fresh chatd; :data:`ACCOUNTS` accounts made over TCP (``/nick NAME`` and
``/register PASSWORD``, 32 clients at a time); then, for each level of :data:`LEVELS`, that
many clients connect and log in with a first line ``PASS NAME:PASSWORD``, ``at_once`` of them
in flight (a closed loop: when one has its ``*** logged in as NAME``, the next connects).
Logins a second = logins ÷ (the last ``logged in as`` − the first ``PASS`` sent), with the
per-login time (``PASS`` sent to its reply: p50, p99) and the server's CPU per login over
the level (connection, thread, verification, the SQLite ``last_login`` write). Also the
verification alone, ``chatd.accounts.passwords.Passwords().verify(hash, password)`` timed on
one thread of the load generator's process, moved to the server's core once the server has
stopped (:func:`verify_cost`): its inverse is what one core can do at best.

chatd allows 5 login attempts a minute per address and 5 per account (and 5 registrations a
minute per address), so every client connects from its own loopback address (127.B.x.y: all
of 127.0.0.0/8 is loopback on Linux; ``Login.source``, which the load generator binds) and
no account is used more than 3 times in a run.

**accounts fan-out**: the fanout workload's C=200 S=10 at full speed, the same code
(chat.chat_round), in pairs of rounds alternated (guests, logged in, guests, ...), each on a
fresh server: guests as the fanout workload has them, byte for byte; logged in, a chatd whose
state directory starts with the accounts file the logins part made (:class:`ChatdAccounts`),
and clients that each send ``PASS login-N:PASSWORD`` as they connect, from their own
addresses, and count as joined only once logged in (:class:`Login`), so all 200 are logged in
before the measurement starts. ``login-N`` is as long as ``guest-N`` (a fresh chatd hands out
guest-1 to about guest-201, a little shuffled), so both kinds relay the same bytes, give or
take one byte on one sender's lines. Reported: the medians of both kinds' deliveries/s and
their ratio (issue 25: within 3 %), and of the server's CPU per delivery.

Runs in the load generator's thread (bench/cli.py).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench.chat import chat_round
from bench.loadgen import Engine
from bench.protocols import Chatd as ChatdProtocol
from bench.protocols import Refused
from bench.servers import Chatd, Meter

#: Accounts made (and the most clients logged in at once, in the fan-out).
ACCOUNTS = 200
#: (clients logging in at once, logins) per level; the first is one at a time.
LEVELS = ((1, 20), (8, 96), (32, 192))
QUICK_LEVELS = ((1, 5), (8, 16), (32, 32))
REGISTER_AT_ONCE = 32
VERIFY_CALLS = 20
#: The second byte of each part's source addresses (127.B.x.y): a part's clients never share
#: an address with another part's, so no attempt window is shared.
REGISTER_BLOCK, LEVEL_BLOCK, FANOUT_BLOCK = 20, 21, 30
ACCOUNTS_FILE = "accounts.sqlite3"  # chatd/store/accounts.py FILENAME


def account(i: int) -> tuple[bytes, bytes]:
    """Client ``i``'s account and password: ``login-N`` is as long as the ``guest-N`` (N =
    i + 1) that a fresh chatd hands the i-th client."""
    name = b"login-%d" % (i + 1)
    return name, b"pw-" + name + b"-bench"


def address(block: int, i: int) -> str:
    """Client ``i``'s loopback source address in ``block`` (250 a /24, none ending 0 or 255)."""
    return f"127.{block}.{i // 250}.{i % 250 + 1}"


class Login(ChatdProtocol):
    """A chatd client that logs in as it connects: ``PASS NAME:PASSWORD`` as its first line
    (sent once connected, as an IRC-style client does), ready at ``*** logged in as NAME``,
    which becomes its nick. ``sent``/``done``: when each connection's ``PASS`` went and its
    reply came (``time.monotonic_ns``)."""

    ready_prefix = b"*** logged in as "

    def __init__(self, block: int) -> None:
        self.block = block
        self.sent: dict[int, int] = {}
        self.done: dict[int, int] = {}

    def source(self, idx: int) -> str:
        return address(self.block, idx)

    def hello(self, conn) -> bytes:
        name, password = account(conn.idx % ACCOUNTS)
        self.sent[conn.idx] = time.monotonic_ns()
        return self.request(name, password)

    def request(self, name: bytes, password: bytes) -> bytes:
        return b"PASS %s:%s\n" % (name, password)

    def setup_line(self, conn, line: bytes) -> tuple[bytes, bool]:
        if line.startswith(self.ready_prefix):
            self.done[conn.idx] = time.monotonic_ns()
            conn.nick = line[len(self.ready_prefix):].rstrip(b"\r")
            return b"", True
        if line.startswith(b"*** error: "):
            raise Refused(line.decode(errors="replace"))
        return b"", False


class Register(Login):
    """Makes client ``i``'s account: ``/nick NAME``, ``/register PASSWORD``; ready at
    ``*** registered NAME`` (which also logs it in)."""

    ready_prefix = b"*** registered "

    def request(self, name: bytes, password: bytes) -> bytes:
        return b"/nick %s\n/register %s\n" % (name, password)


class ChatdAccounts(Chatd):
    """chatd (chatd-bench.toml) whose state directory starts with a copy of ``template``, an
    accounts file made by a real chatd (:func:`logins`)."""

    name = "chatd-accounts"

    def __init__(self, core, template: Path) -> None:
        super().__init__(core)
        self.template = template

    def start(self, timeout: float = 20.0):
        state = self.workdir / "state"
        state.mkdir(mode=0o700)
        shutil.copyfile(self.template, state / ACCOUNTS_FILE)
        (state / ACCOUNTS_FILE).chmod(0o600)
        return super().start(timeout)


#: The accounts file the last logins part made (a copy, outside any server's directory).
_made: list[Path] = []


def _keep(server: Chatd) -> Path:
    """After ``server`` stopped: a consistent copy of its accounts file (SQLite's backup, so
    nothing is left in a -wal file), kept until the benchmark exits."""
    keep = Path(tempfile.mkdtemp(prefix="bench-accounts-"))
    atexit.register(shutil.rmtree, keep, True)
    copy = keep / ACCOUNTS_FILE
    src = sqlite3.connect(server.workdir / "state" / ACCOUNTS_FILE)
    dst = sqlite3.connect(copy)
    try:
        src.backup(dst)
        count = dst.execute("SELECT COUNT(*) FROM accounts").fetchone()[0]
    finally:
        src.close()
        dst.close()
    if count != ACCOUNTS:
        raise RuntimeError(f"accounts file holds {count} accounts, not {ACCOUNTS}")
    _made[:] = [copy]
    return copy


def _level(server, proto: Login, count: int, at_once: int, timeout: float) -> dict:
    """``count`` clients through ``proto``'s setup, ``at_once`` in flight; closes them after.
    Returns the rate (first request sent to last reply), per-request times, server CPU."""
    engine = Engine(proto, server.ports)
    meter = Meter(server)
    deadline = time.monotonic() + timeout
    try:
        while engine.ready < count:
            if engine.dropped:
                idx, reason, tail = engine.dropped[0]
                raise RuntimeError(f"client #{idx}: {reason}; last bytes {tail[-120:]!r}")
            if not server.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{engine.ready} of {count} done; server log: "
                                   f"{server.log_tail(400)!r}")
            while len(engine.conns) < count and len(engine.conns) - engine.ready < at_once:
                engine.open_conn()
            engine.poll(0.01)
        usage = meter.stop()
    finally:
        engine.close()
    time.sleep(0.5)  # the server sees them all leave before the next level starts
    wall = (max(proto.done.values()) - min(proto.sent.values())) / 1e9
    each = sorted((proto.done[i] - proto.sent[i]) / 1e6 for i in proto.done)
    return {"per_s": round(count / wall, 1), "wall_s": round(wall, 3),
            "p50_ms": round(statistics.median(each), 1),
            "p99_ms": round(each[min(len(each) - 1, int(0.99 * len(each)))], 1),
            "cpu_ms": round(usage["server_cpu_s"] * 1000 / count, 1),
            "core": usage["server_cpu_share"], "others": usage["other_cpu_share"],
            "loadgen": usage["loadgen_cpu_share"]}


def verify_cost(core, calls: int = VERIFY_CALLS) -> dict:
    """ms per ``Passwords().verify(hash, password)`` with the parameters chatd ships, wall
    and CPU, on one thread of this process, moved for the while to the server's core
    ``core`` (the server is stopped by then): the core the logins were measured on."""
    from chatd.accounts import passwords

    pinned = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        return _verify_cost(passwords, calls)
    finally:
        os.sched_setaffinity(0, pinned)


def _verify_cost(passwords, calls: int) -> dict:
    hasher = passwords.Passwords()
    name, password = account(0)
    hashed = hasher.hash(password.decode())
    hasher.verify(hashed, password.decode())  # warm: the first call maps the memory
    wall, cpu = [], []
    for _ in range(calls):
        t0, c0 = time.perf_counter(), time.thread_time()
        if not hasher.verify(hashed, password.decode()):
            raise RuntimeError("verify said no to the right password")
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    ms = statistics.median(wall)
    return {"verify_ms": round(ms, 2), "verify_cpu_ms": round(statistics.median(cpu), 2),
            "verify_min_ms": round(min(wall), 2), "verify_ceiling_per_s": round(1000 / ms, 1),
            "argon2": f"argon2id m={passwords.MEMORY_KIB} KiB t={passwords.TIME_COST} "
                      f"p={passwords.PARALLELISM}, {passwords.MAX_AT_ONCE} at once"}


def logins(name: str, core, opts, levels) -> list[dict]:
    """Make the accounts, then log in at each level; one record."""
    server = Chatd(core).start()
    try:
        made = _level(server, Register(REGISTER_BLOCK), ACCOUNTS, REGISTER_AT_ONCE,
                      opts.step_timeout)
        rec = {"accounts": ACCOUNTS, "register_per_s": made["per_s"],
               "register_cpu_ms": made["cpu_ms"], "source": server.source}
        others = []
        for n, (at_once, count) in enumerate(levels):
            got = _level(server, Login(LEVEL_BLOCK + n), count, at_once, opts.step_timeout)
            others.append(got["others"])
            rec.update({f"logins_{at_once}": count, f"logins_per_s_{at_once}": got["per_s"],
                        f"login_p50_ms_{at_once}": got["p50_ms"],
                        f"login_p99_ms_{at_once}": got["p99_ms"],
                        f"login_cpu_ms_{at_once}": got["cpu_ms"],
                        f"server_core_{at_once}": got["core"]})
    finally:
        server.stop()
    try:
        _keep(server)
    finally:
        server.cleanup()
    rec.update(verify_cost(core, 3 if opts.quick else VERIFY_CALLS))
    rec["other_cpu_share"] = max(others)
    return [rec]


def fanout(name: str, core, opts, clients: int, senders: int, messages: int,
           pairs: int) -> list[dict]:
    """Fan-out with guests and with every client logged in, ``pairs`` rounds of each,
    alternated; one record with the medians and their ratio (logged in ÷ guests)."""
    if not _made:  # the logins part did not run (or failed): make the accounts here
        logins(name, core, opts, QUICK_LEVELS[:1])
    kind = functools.partial(ChatdAccounts, template=_made[0])
    guests, logged = [], []
    for _ in range(pairs):
        guests.append(chat_round(name, core, clients, senders, messages, opts.window, None,
                                 opts))
        logged.append(chat_round(name, core, clients, senders, messages, opts.window, None,
                                 opts, kind=kind, proto=Login(FANOUT_BLOCK)))
    both = guests + logged
    med = lambda rounds, key: statistics.median(r[key] for r in rounds)  # noqa: E731
    guest_dps, login_dps = med(guests, "deliveries_per_s"), med(logged, "deliveries_per_s")
    guest_ns = statistics.median(_ns_per_delivery(r) for r in guests)
    login_ns = statistics.median(_ns_per_delivery(r) for r in logged)
    return [{"clients": clients, "senders": senders, "messages": messages, "pairs": pairs,
             "guest_dps": round(guest_dps), "login_dps": round(login_dps),
             "dps_ratio": round(login_dps / guest_dps, 4) if guest_dps else None,
             "guest_rounds_dps": [r["deliveries_per_s"] for r in guests],
             "login_rounds_dps": [r["deliveries_per_s"] for r in logged],
             "guest_ns_per_delivery": round(guest_ns, 1),
             "login_ns_per_delivery": round(login_ns, 1),
             "cpu_ratio": round(guest_ns / login_ns, 4) if login_ns else None,
             "guest_p99_ms": med(guests, "lat_p99_ms"), "login_p99_ms": med(logged, "lat_p99_ms"),
             "login_setup_s": med(logged, "setup_s"), "guest_setup_s": med(guests, "setup_s"),
             "lost": max(r["lost"] for r in both), "garbled": max(r["garbled"] for r in both),
             "duplicated": max(r["duplicated"] for r in both),
             "source": logged[0]["source"],
             "loadgen_cpu_share": max(r["loadgen_cpu_share"] for r in both),
             "other_cpu_share": max(r["other_cpu_share"] for r in both)}]


def _ns_per_delivery(result: dict) -> float:
    return result["server_cpu_s"] * 1e9 / max(1, result["delivered"])
