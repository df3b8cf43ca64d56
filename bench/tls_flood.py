"""Reproduce issue 9 defect 2: idle connections to the TLS port that never send a ClientHello.

Starts a real chatd (default limits, a throw-away certificate), keeps ``--connections`` idle
TCP connections open to its TLS port from ``--sources`` loopback addresses (127.0.0.2...;
reopening each one the server closes, as a flooder would), and meanwhile probes every
``--probe-interval`` seconds from 127.0.0.1 with a plain client and a TLS client. Prints how
many probes got in, and what chatd logged. Not a test: a measurement for the issue note.

    .venv/bin/python bench/tls_flood.py [--connections 1100] [--seconds 25]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import selectors
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def start_chatd(tmp: Path, extra_toml: str) -> tuple[subprocess.Popen, int, int, Path]:
    cert, key = tmp / "c.pem", tmp / "c.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    config = tmp / "chatd.toml"
    config.write_text(f'[tls]\ntls_cert = "{cert}"\ntls_key = "{key}"\n{extra_toml}\n')
    log = tmp / "chatd.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "chatd", "-c", str(config), "--port", "0",
                             "--tls-port", "0", "--log-format", "json", "--log-file", str(log),
                             "--admin-socket", str(tmp / "a.sock"), "--state-dir", str(tmp)],
                            env=env, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines() if log.exists() else []:
            event = json.loads(line)
            if event["event"] == "listening":
                return proc, event["port"], event["tls_port"], log
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("chatd did not start")


class Flood:
    """``count`` idle connections, each reopened when the server closes it (paced, so the
    flooder itself does not eat the machine)."""

    def __init__(self, port: int, count: int, sources: int, reopen_per_second: float) -> None:
        self.port, self.count, self.sources = port, count, sources
        self.reopen_per_second = reopen_per_second
        self.selector = selectors.DefaultSelector()
        self.opened = self.closed_by_server = 0
        self.stop = threading.Event()

    def _open(self, i: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((f"127.0.0.{2 + i % self.sources}", 0))
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        self.selector.register(sock, selectors.EVENT_READ, i)
        self.opened += 1

    def run(self) -> None:
        for i in range(self.count):
            self._open(i)
        due: collections.deque = collections.deque()
        tokens, last = 0.0, time.monotonic()
        while not self.stop.is_set():
            for key, _ in self.selector.select(0.01 if due else 0.05):
                self.selector.unregister(key.fileobj)
                key.fileobj.close()
                self.closed_by_server += 1
                due.append(key.data)
            now = time.monotonic()
            tokens = min(tokens + (now - last) * self.reopen_per_second, self.reopen_per_second)
            last = now
            while due and tokens >= 1:
                self._open(due.popleft())
                tokens -= 1
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()


def probe_plain(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            return sock.makefile("rb").readline().decode().strip()
    except OSError as exc:
        return f"error: {exc.__class__.__name__}"


def probe_tls(port: int) -> str:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                return sock.makefile("rb").readline().decode().strip()
    except (OSError, ssl.SSLError) as exc:
        return f"error: {exc.__class__.__name__}"


def outcome(line: str) -> str:
    return "in" if line.startswith("*** welcome to ") else line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--probe-interval", type=float, default=0.5)
    parser.add_argument("--reopen-per-second", type=float, default=2000.0)
    parser.add_argument("--toml", default="", help="extra TOML appended to the [tls] section")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, tls_port, log = start_chatd(Path(tmp), args.toml)
        flood = Flood(tls_port, args.connections, args.sources, args.reopen_per_second)
        thread = threading.Thread(target=flood.run, daemon=True)
        thread.start()
        plain, secure = collections.Counter(), collections.Counter()
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            plain[outcome(probe_plain(port))] += 1
            secure[outcome(probe_tls(tls_port))] += 1
            time.sleep(args.probe_interval)  # pacing the probes, not synchronisation
        threads = int(dict(line.split(":", 1) for line in
                           Path(f"/proc/{proc.pid}/status").read_text().splitlines())["Threads"])
        flood.stop.set()
        thread.join(10)
        proc.terminate()
        proc.wait(20)
        events = collections.Counter(json.loads(line)["event"] for line in log.read_text().splitlines())
    print(f"flood: {args.connections} idle connections from {args.sources} addresses, "
          f"{flood.opened} opened, {flood.closed_by_server} closed by chatd in {args.seconds:.0f}s")
    print(f"plain probes: {dict(plain)}")
    print(f"TLS probes:   {dict(secure)}")
    print(f"chatd threads at the end of the flood: {threads}")
    print(f"log events: {dict(events.most_common(8))} ({sum(events.values())} lines)")


if __name__ == "__main__":
    main()
