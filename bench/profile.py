"""``python -m bench.profile``: where a cluster node's CPU goes, per relayed line (issue 28).

Runs one round of the cluster workload (the same engine, servers and pinning as ``python -m
bench --workloads cluster``) while ``py-spy record`` samples every chatd node without
changing it (it reads the process from outside), then prints, per node and for the nodes
together, the share of samples and the microseconds per message sent spent in each of
chatd's threads and in the functions that cost the most, both as their own time (the leaf
frame) and with what they call. py-spy counts only threads that are running (it asks the
OS), so a thread blocked in ``recv`` or ``wait`` costs nothing here, as it costs no CPU.

    python -m bench.profile --paced 500 --seconds 10            # the paced workload
    python -m bench.profile --messages 20000                     # full speed

py-spy comes from PyPI (``pip install py-spy``); it needs ptrace (root, or
``kernel.yama.ptrace_scope = 0``). Nothing here is part of ``make test``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import chat
from bench.cli import prepare

#: Threads chatd does not name, known by a frame of theirs (named ones go by their name).
THREADS = {"Session.run (chatd/core/session.py)": "session",
           "Service.serve (chatd/lifecycle/service.py)": "main"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--server", default="chatd-cluster")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--senders", type=int, default=5)
    p.add_argument("--paced", type=float, help="messages/s per sender (default: full speed)")
    p.add_argument("--seconds", type=float, default=10.0, help="paced: how long")
    p.add_argument("--messages", type=int, default=20000, help="full speed: per sender")
    p.add_argument("--rate", type=int, default=997,
                   help="py-spy samples per second; 0: no py-spy, /proc figures only (py-spy's "
                   "own CPU competes with the nodes; threads are then told apart by CPU only)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, help="keep the raw profiles here")
    args = p.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("bench.profile: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    opts = argparse.Namespace(no_pin=False, loadgen_cpu=0, server_cpu=1, servers=[args.server],
                              step_timeout=300.0, idle_s=2.0, round_limit=300.0, window=64,
                              quick=False, runs=1, workloads=["cluster"])
    core, _ = prepare(opts)
    out = args.out or Path(tempfile.mkdtemp(prefix="chatd-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    messages = int(args.paced * args.seconds) if args.paced else args.messages
    spies: list[tuple[str, subprocess.Popen, Path]] = []

    before: dict[str, dict] = {}
    after: dict[str, dict] = {}

    def during(server):
        for name, member in server.members():
            if not name.startswith("node") and member is not server:
                continue
            before[name] = _tasks(member.pid)
            if not args.rate:
                continue
            path = out / f"{name}.txt"
            with open(out / f"{name}.err", "wb") as err:  # read at the end: _lag()
                spies.append((name, subprocess.Popen(
                    [py_spy, "record", "--pid", str(member.pid), "--rate", str(args.rate),
                     "--format", "raw", "--threads", "--nonblocking", "--output",
                     str(path)], stdout=subprocess.DEVNULL, stderr=err), path))

        def stop() -> dict:
            for name, member in server.members():
                if name in before:
                    after[name] = _tasks(member.pid)
            for _, proc, _ in spies:
                proc.send_signal(2)  # py-spy writes its output on SIGINT
            for _, proc, _ in spies:
                proc.wait(timeout=60)
            return {}
        return stop

    result = chat.chat_round(args.server, core, args.clients, args.senders, messages,
                             opts.window, args.paced, opts, during=during)
    sent = result.get("sent") or messages * args.senders
    keep = {k: result.get(k) for k in ("deliveries_per_s", "lat_cross_p50_ms", "lat_cross_p99_ms",
                                      "lat_cross_max_ms", "process_cpu", "redis_commands_per_message")}
    print(json.dumps({"sent": sent, **keep}))
    total, total_inclusive, threads_total = (collections.Counter() for _ in range(3))
    seconds = 1.0 / (args.rate or 1)
    if not args.rate:
        for name, tasks in before.items():
            _report_tasks(name, tasks, after.get(name, {}), {}, sent)
    for name, _, path in spies:
        if not path.exists():
            print(f"{name}: no profile written", file=sys.stderr)
            continue
        _warn_lag(name, path.with_suffix(".err"))
        raw = path.read_text()
        own, inclusive, threads = _fold(raw)
        _report_tasks(name, before.get(name, {}), after.get(name, {}), _kinds(raw), sent)
        total.update(own)
        total_inclusive.update(inclusive)
        threads_total.update(threads)
        _report(name, own, inclusive, threads, sent, seconds, args.top)
    _report("all nodes", total, total_inclusive, threads_total, sent, seconds, args.top)
    print(f"raw profiles: {out}")
    return 0


def _fold(raw: str) -> tuple[collections.Counter, collections.Counter, collections.Counter]:
    """py-spy's collapsed stacks -> samples per leaf function (own time), per function with
    what it calls (inclusive, once per stack) and per thread.

    A line is ``thread (TID)[: NAME];frame;frame;... COUNT``; a frame ``func (path:line)``."""
    own, inclusive, threads = (collections.Counter() for _ in range(3))
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        head, *frames = stack.split(";")
        if not frames:
            continue
        frames = [_short(f) for f in frames]
        n = int(count)
        _, _, name = head.partition(": ")
        kind = name or next((THREADS[f] for f in frames if f in THREADS), "other")
        threads[kind] += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return own, inclusive, threads


def _tasks(pid: int) -> dict[int, tuple[int, int, int, int]]:
    """Every thread of ``pid``: (user ticks, system ticks, voluntary and involuntary context
    switches), exact and kernel time included, which sampling a Python stack cannot see."""
    tasks = {}
    for entry in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = dict(line.split(":\t", 1) for line in
                          (entry / "status").read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        tasks[int(entry.name)] = (int(fields[11]), int(fields[12]),
                                  int(status["voluntary_ctxt_switches"]),
                                  int(status["nonvoluntary_ctxt_switches"]))
    return tasks


def _warn_lag(name: str, err: Path) -> None:
    """Say so if py-spy fell behind the process it sampled (its last warning): on a loaded
    2-core machine it ran 4.6-4.9 s behind at 997 Hz and at 100 Hz (issue 28), which this
    report used to hide. Its function shares are then biased to threads that just woke."""
    try:
        lines = [line for line in err.read_text(errors="replace").splitlines() if "behind" in line]
    except OSError:
        return
    if lines:
        print(f"{name}: {lines[-1].strip()} (function shares biased to threads that just "
              "woke: trust the /proc figures)", file=sys.stderr)


def _kinds(raw: str) -> dict[int, str]:
    """Native thread id -> what the thread is, from py-spy's ``thread (TID)[: NAME]`` heads."""
    kinds = {}
    for line in raw.splitlines():
        head, _, rest = line.partition(";")
        if not head.startswith("thread ("):
            continue
        tid = int(head[8:head.index(")")])
        _, _, name = head.partition(": ")
        frames = [_short(f) for f in rest.rpartition(" ")[0].split(";")]
        kinds[tid] = name or next((THREADS[f] for f in frames if f in THREADS), "other")
    return kinds


def _report_tasks(name: str, before: dict, after: dict, kinds: dict, sent: int) -> None:
    """CPU (user + system) and sleeps (voluntary switches: each is a wake-up later) per thread
    kind, per message sent."""
    tick = os.sysconf("SC_CLK_TCK")
    totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0, 0])
    for tid, now in after.items():
        was = before.get(tid, (0, 0, 0, 0))
        row = totals[kinds.get(tid) or ("unsampled" if kinds else f"thread {tid}")]
        for i in range(4):
            row[i] += now[i] - was[i]
        row[4] += 1
    cpu = sum(r[0] + r[1] for r in totals.values())
    print(f"\n== {name}: {cpu / tick:.2f} s CPU by /proc (user + system), "
          f"{cpu / tick / sent * 1e6:.1f} us per message sent")
    for kind, (user, system, vol, invol, count) in sorted(totals.items(),
                                                          key=lambda kv: -kv[1][0] - kv[1][1]):
        if not user + system + vol:
            continue
        print(f"   {kind:<16} x{count:<4} user {user / tick / sent * 1e6:6.1f} us/msg  "
              f"sys {system / tick / sent * 1e6:6.1f} us/msg  sleeps {vol / sent:5.2f}/msg  "
              f"preempted {invol / sent:5.2f}/msg")


def _short(frame: str) -> str:
    """``func (path/to/chatd/x.py:123)`` -> ``func (chatd/x.py)``: lines apart, one function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for anchor in ("chatd/", "redis/", "json/", "threading.py", "selectors.py", "socket.py"):
        i = where.find(anchor)
        if i >= 0 and (i == 0 or where[i - 1] == "/"):
            return f"{name} ({where[i:]})"
    return f"{name} ({where.rsplit('/', 1)[-1]})"


def _report(name: str, own, inclusive, threads, sent: int, seconds: float, top: int) -> None:
    cpu = sum(own.values())
    if not cpu:
        return

    def us(n: int) -> str:
        return f"{n * seconds / sent * 1e6:7.2f} us/msg"

    print(f"\n== {name}: {cpu * seconds:.2f} s of CPU sampled, "
          f"{cpu * seconds / sent * 1e6:.1f} us per message sent")
    for kind, n in threads.most_common():
        print(f"   thread {kind:<16} {100 * n / cpu:5.1f} %  {us(n)}")
    print("   -- own time")
    for func, n in own.most_common(top):
        print(f"   {100 * n / cpu:5.1f} %  {us(n)}  {func}")
    print("   -- with what it calls")
    for func, n in inclusive.most_common(top):
        print(f"   {100 * n / cpu:5.1f} %  {us(n)}  {func}")


if __name__ == "__main__":
    sys.exit(main())
