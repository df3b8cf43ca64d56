"""``python -m bench.profile``: where a cluster node's CPU goes, per relayed line (issue 28).

Runs one round of the cluster workload (the same engine, servers and pinning as ``python -m
bench --workloads cluster``) while ``py-spy record`` samples every chatd node without
changing it (it reads the process from outside), then prints, per node and for the nodes
together, the share of samples and the microseconds per message sent spent in each of
chatd's threads and in the functions that cost the most. Samples are taken with ``--idle``,
so time a thread spends blocked shows as that thread's wait and is left out of the CPU
figures (py-spy marks idle frames; see :func:`_fold`).

    python -m bench.profile --paced 500 --seconds 10            # the paced workload
    python -m bench.profile --messages 20000                     # full speed

py-spy comes from PyPI (``pip install py-spy``); it needs ptrace (root, or
``kernel.yama.ptrace_scope = 0``). Nothing here is part of ``make test``.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import chat
from bench.cli import prepare

#: Frames that name the thread a stack belongs to, outermost first (threading's bootstrap
#: is left out: the first chatd frame under it says what the thread is).
THREADS = {
    "run (chatd/cluster/publisher.py)": "publisher",
    "run (chatd/cluster/reader.py)": "reader",
    "_run (chatd/flusher.py)": "flusher",
    "run (chatd/session.py)": "session",
    "_serve (chatd/session.py)": "session",
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--server", default="chatd-cluster")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--senders", type=int, default=5)
    p.add_argument("--paced", type=float, help="messages/s per sender (default: full speed)")
    p.add_argument("--seconds", type=float, default=10.0, help="paced: how long")
    p.add_argument("--messages", type=int, default=20000, help="full speed: per sender")
    p.add_argument("--rate", type=int, default=997, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, help="keep the raw profiles here")
    args = p.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("bench.profile: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    opts = argparse.Namespace(no_pin=False, loadgen_cpu=0, server_cpu=1, servers=[args.server],
                              step_timeout=300.0, idle_s=2.0, round_limit=300.0, window=64,
                              quick=False)
    core, _ = prepare(opts)
    out = args.out or Path(tempfile.mkdtemp(prefix="chatd-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    messages = int(args.paced * args.seconds) if args.paced else args.messages
    spies: list[tuple[str, subprocess.Popen, Path]] = []

    def during(server):
        for name, member in server.members():
            if not name.startswith("node") and member is not server:
                continue
            path = out / f"{name}.txt"
            spies.append((name, subprocess.Popen(
                [py_spy, "record", "--pid", str(member.pid), "--rate", str(args.rate),
                 "--format", "raw", "--idle", "--threads", "--nonblocking", "--output",
                 str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), path))

        def stop() -> dict:
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
    total = collections.Counter()
    threads_total = collections.Counter()
    seconds = 1.0 / args.rate
    for name, _, path in spies:
        if not path.exists():
            print(f"{name}: no profile written", file=sys.stderr)
            continue
        funcs, threads = _fold(path.read_text())
        total.update(funcs)
        threads_total.update(threads)
        _report(name, funcs, threads, sent, seconds, args.top)
    _report("all nodes", total, threads_total, sent, seconds, args.top)
    print(f"raw profiles: {out}")
    return 0


def _fold(raw: str) -> tuple[collections.Counter, collections.Counter]:
    """py-spy's collapsed stacks -> CPU samples per leaf function and per thread kind.

    A line is ``thread (idle?);frame;frame;... COUNT``; py-spy with ``--idle`` keeps blocked
    samples and names their leaf as the blocking call, which we count as wait (left out of
    the CPU figures) when it is a known blocking call."""
    funcs, threads = collections.Counter(), collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        leaf = _short(frames[-1])
        if _blocked(leaf):
            continue
        kind = next((THREADS[f] for f in map(_short, frames) if f in THREADS), "other")
        funcs[leaf] += int(count)
        threads[kind] += int(count)
    return funcs, threads


def _short(frame: str) -> str:
    """``func (path/to/chatd/x.py:123)`` -> ``func (chatd/x.py)``: lines apart, one function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for anchor in ("/chatd/", "/redis/", "/threading.py", "/selectors.py", "/socket.py"):
        i = where.find(anchor)
        if i >= 0:
            where = where[i + 1:]
            break
    else:
        where = where.rsplit("/", 1)[-1]
    return f"{name} ({where})"


def _blocked(leaf: str) -> bool:
    return leaf.split(" ", 1)[0] in {"wait", "select", "poll", "recv", "recv_into", "accept",
                                      "sleep", "acquire", "epoll", "_recv_into", "read"}


def _report(name: str, funcs, threads, sent: int, seconds: float, top: int) -> None:
    cpu = sum(funcs.values())
    if not cpu:
        return
    print(f"\n== {name}: {cpu * seconds:.2f} s of CPU sampled, "
          f"{cpu * seconds / sent * 1e6:.1f} us per message sent")
    for kind, n in threads.most_common():
        print(f"   thread {kind:<10} {100 * n / cpu:5.1f} %  {n * seconds / sent * 1e6:7.2f} us/msg")
    for func, n in funcs.most_common(top):
        print(f"   {100 * n / cpu:5.1f} %  {n * seconds / sent * 1e6:7.2f} us/msg  {func}")


if __name__ == "__main__":
    sys.exit(main())
