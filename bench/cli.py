"""``python -m bench`` (``make bench``): run the workloads against chatd, ngircd and the naive
server, print a JSON line and a table row per result, then the medians over the runs and the
issue's targets with PASS/FAIL. Results also go to ``bench/results/<UTC time>.jsonl``.

This process is the load generator: it pins itself to one core and starts each server pinned
to another (``taskset``). Runs in the main thread throughout.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import accounts, chat, history, ignore, report, scale, upgrade
from bench.clusters import SERVERS, redis_binary
from bench.servers import BENCH, chatd_command, ngircd_binary, source_digest
from bench.servers import SERVERS as SINGLE

WORKLOADS = ("fanout", "connect", "slow", "admin", "metrics", "cluster", "history", "upgrade",
             "accounts", "ignore")
#: What runs without --workloads: cluster only means something with a multi-node server,
#: and those are not in the default server list; accounts (issue 25) and ignore (issue 26)
#: only when asked for.
DEFAULT_WORKLOADS = ("fanout", "connect", "slow", "admin", "metrics", "history", "upgrade")
SERVER_NAMES = ("chatd", "ngircd", "naive")  # the default; every key of SERVERS is selectable

#: Sizes: (full, quick). Full sizes are the issue's; quick is a smoke test.
SIZES = {
    "fanout_small": ((50, 5, 20000), (50, 5, 400)),  # clients, senders, messages each
    "fanout_big": ((200, 10, 6000), (200, 10, 300)),
    "fanout_paced": ((50, 5, 500.0, 5.0), (50, 5, 500.0, 1.0)),  # ... rate each, seconds
    "connect": ((1000, 2500, 5000, 7500, 10000), (200, 1000)),
    "slow": ((20, 200.0, 8.0), (20, 200.0, 3.0)),  # clients, rate each, seconds
    # fanout_big's C and S with more messages: seconds of sending, so a dozen scrapes or more
    "metrics": ((200, 10, 20000, 0.1), (200, 10, 3000, 0.1)),  # ... messages each, scrape every s
    "cluster_full": ((50, 5, 40000), (50, 5, 400)),  # clients (spread over the nodes), ...
    "cluster_paced": ((50, 5, 500.0, 5.0), (50, 5, 500.0, 1.0)),
    "history_join": ((1000.0, 5.0), (1000.0, 1.0)),  # lines/s into the room, seconds of joins
    "upgrade": ((100, 5000), (100, 1000)),  # clients connected during chatctl upgrade
    "accounts_logins": (accounts.LEVELS, accounts.QUICK_LEVELS),  # (at once, logins) each
    # fanout_big's C and S with metrics' messages each (2 s of sending a round), and pairs of
    # rounds (guests, logged in) per run
    "accounts_fanout": ((200, 10, 20000, 3), (200, 10, 300, 1)),
    # accounts_fanout's sizes (pairs of rounds: nobody ignoring, some ignoring), and the
    # clients that ignore one sender
    "ignore": ((200, 10, 20000, 3, ignore.IGNORERS), (200, 10, 300, 1, ignore.IGNORERS)),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small counts and 1 run (smoke test)")
    p.add_argument("--runs", type=int, help="runs per workload and server (default 3; quick 1)")
    p.add_argument("--servers", default=",".join(SERVER_NAMES),
                   help=f"comma-separated, from {', '.join(SERVERS)} (default "
                   f"{','.join(SERVER_NAMES)})")
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                   help=f"comma-separated, from {', '.join(WORKLOADS)} "
                   f"(default {','.join(DEFAULT_WORKLOADS)})")
    p.add_argument("--window", type=int, default=64, help="fanout: messages in flight per sender")
    p.add_argument("--steps", help="connect: comma-separated client counts")
    p.add_argument("--loadgen-cpu", type=int, default=0)
    p.add_argument("--server-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    p.add_argument("--results", type=Path, default=BENCH / "results")
    p.add_argument("--max-minutes", type=float, default=45.0,
                   help="skip what is left after this long (default 45)")
    args = p.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    for name in args.servers:
        if name not in SERVERS:
            p.error(f"unknown server {name!r} (choose from {', '.join(SERVERS)})")
    for name in args.workloads:
        if name not in WORKLOADS:
            p.error(f"unknown workload {name!r} (choose from {', '.join(WORKLOADS)})")
    args.runs = args.runs or (1 if args.quick else 3)
    # bounds for every loop, in seconds
    args.step_timeout, args.idle_s, args.round_limit = 300.0, 2.0, 120.0
    # echo: N session threads woken at once (chatd-irc's crowd), not one line to everyone
    args.bcast_timeout, args.echo_timeout, args.admin_repeats = 10.0, 60.0, 5
    return args


def size(args, key):
    full, quick = SIZES[key]
    if key == "connect" and args.steps:
        return tuple(int(n) for n in args.steps.split(","))
    return quick if args.quick else full


def plan(args) -> tuple[list, dict]:
    """[(workload, config label, servers, fn(name, core) -> records)], and the labels."""
    items, labels = [], {}
    if "fanout" in args.workloads:
        for key in ("fanout_small", "fanout_big", "fanout_paced"):
            clients, senders, *rest = size(args, key)
            if key == "fanout_paced":
                rate, seconds = rest
                messages, label = int(rate * seconds), f"fanout C={clients} S={senders} {rate:g}/s"
            else:
                rate, messages, label = None, rest[0], f"fanout C={clients} S={senders} full speed"
            labels[key] = label
            fn = functools.partial(_fanout, args=args, clients=clients, senders=senders,
                                   messages=messages, rate=rate)
            items.append(("fanout", label, args.servers, fn))
    if "cluster" in args.workloads:
        items += _cluster_items(args, labels)
    if "history" in args.workloads:
        items += _history_items(args, labels)
    if "upgrade" in args.workloads:
        for clients in size(args, "upgrade"):
            labels[f"upgrade_{clients}"] = label = f"chatctl upgrade with {clients:,} clients"
            fn = functools.partial(upgrade.upgrade, opts=args, clients=clients)
            items.append(("upgrade", label, ["chatd"], fn))
    steps = size(args, "connect")
    labels["connect_n"] = steps[-1]
    if "connect" in args.workloads:
        labels["connect"] = f"connect to {steps[-1]:,}"
        with_admin = "admin" in args.workloads
        fn = functools.partial(scale.connect, opts=args, steps=list(steps), with_admin=with_admin)
        # the crowd protocols (server-wide NOTICE to $bench.irc...) are for single servers
        items.append(("connect", labels["connect"], [s for s in args.servers if s in SINGLE], fn))
    if "slow" in args.workloads:
        clients, rate, seconds = size(args, "slow")
        labels["slow"] = f"slow {clients} clients at {rate:g}/s"
        fn = functools.partial(chat.slow, opts=args, clients=clients, rate=rate, seconds=seconds)
        items.append(("slow", labels["slow"], args.servers, fn))
    if "metrics" in args.workloads and "chatd" in args.servers:
        clients, senders, messages, interval = size(args, "metrics")
        labels["metrics"] = (f"metrics C={clients} S={senders} scraped every "
                             f"{interval * 1000:g} ms")
        fn = functools.partial(chat.metrics, opts=args, clients=clients, senders=senders,
                               messages=messages, interval=interval)
        items.append(("metrics", labels["metrics"], ["chatd"], fn))
    if "accounts" in args.workloads and "chatd" in args.servers:
        items += _accounts_items(args, labels)
    if "ignore" in args.workloads and "chatd" in args.servers:
        items += _ignore_items(args, labels)
    if "admin" in args.workloads:
        labels["admin"] = f"admin with {steps[-1]:,} clients"
        if "connect" not in args.workloads:
            fn = functools.partial(scale.admin, opts=args, clients=steps[-1])
            items.append(("admin", labels["admin"], ["chatd"], fn))
    return items, labels


def _cluster_items(args, labels: dict) -> list:
    """Fan-out with the clients spread over each server's endpoints: full speed and paced."""
    items = []
    for key in ("cluster_full", "cluster_paced"):
        clients, senders, *rest = size(args, key)
        if key == "cluster_paced":
            rate, seconds = rest
            messages, how = int(rate * seconds), f"{rate:g}/s"
        else:
            rate, messages, how = None, rest[0], "full speed"
        labels[key] = label = f"cluster C={clients} S={senders} {how}"
        fn = functools.partial(_fanout, args=args, clients=clients, senders=senders,
                               messages=messages, rate=rate)
        items.append(("cluster", label, args.servers, fn))
    return items


def _history_items(args, labels: dict) -> list:
    """Issue 12: fan-out C=200 S=10 with history on (chatd) and off, and joins with replay."""
    clients, senders, messages = size(args, "fanout_big")
    labels["history_fanout"] = label = f"history on/off: fanout C={clients} S={senders}"
    fn = functools.partial(_fanout, args=args, clients=clients, senders=senders,
                           messages=messages, rate=None)
    items = [("fanout", label, ["chatd", "chatd-nohistory"], fn)]
    rate, seconds = size(args, "history_join")
    labels["history_join"] = label = f"/join with a 10-line replay, room at {rate:g} lines/s"
    fn = functools.partial(history.join_replay, opts=args, rate=rate, seconds=seconds)
    return items + [("history", label, ["chatd"], fn)]


def _accounts_items(args, labels: dict) -> list:
    """Issue 25: logins a second (and one verification's cost), then fan-out C=200 S=10 with
    guests and with every client logged in, alternated (bench/accounts.py)."""
    levels = size(args, "accounts_logins")
    labels["accounts_logins"] = label = (f"logins: {accounts.ACCOUNTS} accounts, "
                                         + ", ".join(f"{n} at once" for n, _ in levels))
    items = [("logins", label, ["chatd"],
              functools.partial(accounts.logins, opts=args, levels=levels))]
    clients, senders, messages, pairs = size(args, "accounts_fanout")
    labels["accounts_fanout"] = label = (f"accounts: fanout C={clients} S={senders} logged in "
                                         "vs guests")
    fn = functools.partial(accounts.fanout, opts=args, clients=clients, senders=senders,
                           messages=messages, pairs=pairs)
    return items + [("accounts", label, ["chatd"], fn)]


def _ignore_items(args, labels: dict) -> list:
    """Issue 26: fan-out C=200 S=10 with nobody ignoring anyone and with 20 clients ignoring
    one sender, alternated (bench/ignore.py)."""
    clients, senders, messages, pairs, ignorers = size(args, "ignore")
    labels["ignore"] = label = (f"ignore: fanout C={clients} S={senders}, {ignorers} ignoring "
                                "one sender vs nobody")
    fn = functools.partial(ignore.fanout, opts=args, clients=clients, senders=senders,
                           messages=messages, pairs=pairs, ignorers=ignorers)
    return [("ignore", label, ["chatd"], fn)]


def _fanout(name, core, *, args, clients, senders, messages, rate):
    return chat.fanout(name, core, args, clients, senders, messages, rate)


def prepare(args) -> tuple[int | None, dict]:
    """Raise the file limit, pin ourselves, check the servers; returns (server core, meta)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    core = None
    cpus = sorted(os.sched_getaffinity(0))
    if not args.no_pin and len(cpus) >= 2 and shutil.which("taskset"):
        os.sched_setaffinity(0, {args.loadgen_cpu})
        core = args.server_cpu
    else:
        print("bench: warning: not pinning (fewer than 2 cores, no taskset, or --no-pin)",
              file=sys.stderr)
    _skip_missing(args, "ngircd", ngircd_binary(), "make bench")
    _skip_missing(args, "chatd-cluster", redis_binary(), "make bench")
    return core, _meta(args, core)


def _skip_missing(args, prefix: str, binary: str, installer: str) -> None:
    """Drop the servers named ``prefix*`` whose program is not installed, with a warning."""
    if shutil.which(binary):
        return
    for name in [s for s in args.servers if s.startswith(prefix)]:
        print(f"bench: warning: {binary} is not installed ({installer} installs it as root); "
              f"skipping {name}", file=sys.stderr)
        args.servers.remove(name)


def _meta(args, core) -> dict:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    version = lambda cmd: _first_line(cmd)  # noqa: E731
    return {"type": "meta", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": platform.node(), "cpu": model, "cores": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version(),
            "chatd": version([*chatd_command(), "--version"]),
            "chatd_source": source_digest("chatd", "chatctl"),
            "git": version(["git", "-C", str(BENCH.parent), "describe", "--always", "--dirty"]),
            "ngircd": version([ngircd_binary(), "--version"])
            if any(s.startswith("ngircd") for s in args.servers) else None,
            "redis": version([redis_binary(), "--version"])
            if any(s.startswith("chatd-cluster") for s in args.servers) else None,
            "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
            "loadgen_cpu": None if core is None else args.loadgen_cpu, "server_cpu": core,
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "quick": args.quick,
            "runs": args.runs, "window": args.window, "servers": args.servers,
            "workloads": args.workloads}


def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else None


def main(argv=None) -> int:
    args = parse_args(argv)
    core, meta = prepare(args)
    items, labels = plan(args)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + ".jsonl")
    out = path.open("w")
    out.write(json.dumps(meta) + "\n")
    print(f"bench: {meta['cpu']}, {meta['cores']} cores, load {' '.join(meta['loadavg_at_start'])}; "
          f"loadgen on cpu {meta['loadgen_cpu']}, servers on cpu {meta['server_cpu']} "
          f"(node k of a multi-node server: cpu (server cpu + k) mod cores); "
          f"{args.runs} run(s); results in {path}", flush=True)
    try:
        records = run_all(args, core, items, labels, out)
    except KeyboardInterrupt as stop:  # servers are stopped by then; summarise what we have
        records = stop.args[0] if stop.args else []
        print("bench: interrupted", file=sys.stderr)
    summary = report.medians(records)
    verdicts = report.targets(summary, labels)
    for rec in summary:
        out.write(json.dumps({"type": "median", **rec}) + "\n")
    for verdict in verdicts:
        out.write(json.dumps({"type": "target", **verdict}) + "\n")
    out.close()
    print(f"\n## Medians of {args.runs} run(s) — {meta['date']}, {meta['cpu']}, "
          f"{meta['cores']} cores" + (" — QUICK MODE (small counts)" if args.quick else ""))
    print("\n".join(report.table(summary)))
    print("\n".join(report.target_lines(verdicts)))
    print(f"\nresults: {path}")
    return 0


def run_all(args, core, items, labels, out) -> list[dict]:
    records: list[dict] = []
    try:
        _run_all(args, core, items, labels, out, records)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(records) from None
    return records


def _run_all(args, core, items, labels, out, records: list) -> None:
    deadline = time.monotonic() + args.max_minutes * 60
    for run in range(1, args.runs + 1):
        for workload, label, servers, fn in items:
            for name in servers:
                if time.monotonic() > deadline:
                    print(f"bench: --max-minutes reached; skipping {label} {name} run {run}",
                          file=sys.stderr)
                    continue
                for rec in _measure(fn, name, core, workload):
                    rec.update(workload=rec.get("workload", workload), server=name, run=run)
                    rec["config"] = label if rec["workload"] == workload else labels["admin"]
                    records.append(rec)
                    out.write(json.dumps({"type": "result", **rec}) + "\n")
                    out.flush()
                    print(json.dumps(rec), flush=True)
                    print(report.row(rec), flush=True)


def _measure(fn, name, core, workload) -> list[dict]:
    started = time.monotonic()
    try:
        records = fn(name, core)
    except Exception as exc:  # a server that misbehaves is a result, not the end of the run
        return [{"workload": workload, "error": f"{type(exc).__name__}: {exc}",
                 "seconds": round(time.monotonic() - started, 1)}]
    for rec in records:
        rec["seconds"] = round(time.monotonic() - started, 1)
    return records
