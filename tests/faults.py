"""Helpers for the adversarial tests (test_fuzz.py, test_faults.py, test_soak.py).

What a daemon looks like from outside, and ways to hurt it, without touching chatd's code:

- :func:`proc_figures` reads threads, file descriptors and RSS from ``/proc/PID``;
  :func:`settle` waits (with a deadline) until threads and descriptors are back to a baseline
  and, if they are not, names the extra threads and descriptors.
- :func:`wait_until` is the one polling loop: a condition with a deadline, never a sleep that
  stands in for synchronisation.
- :class:`Admin` speaks the admin protocol (raw JSON lines) over the Unix socket.
- :func:`vanish` closes a TCP socket without sending FIN or RST (TCP_REPAIR), as a peer that
  lost power would; :func:`reset` closes with an RST.
- :func:`in_flight` lists connections with unacknowledged data (wait until it is empty before
  :func:`vanish`); :func:`ss_established` shows their timers (keepalive).
- :func:`server_socket` borrows chatd's end of a client connection (pidfd_getfd) so a test can
  read its socket options (keepalive) or shorten its keepalive timers.
- :class:`Swarm` drives hundreds of non-blocking clients from one thread.
- ``tmpfs`` (fixture, root only) mounts small file systems to fill or make read-only;
  :func:`fill` fills one; :class:`FileLoggedChatd` runs chatd with ``--log-file`` (the
  ``chatd`` fixture reads its events from stderr) and :func:`pad_log_to_page_end` makes the
  moment its log runs out of space exact.
- :func:`check_line` is the display-safety rule every line chatd sends must keep.
- :data:`BOOK` collects the figures (inputs per fuzz target, faults injected, soak
  before/after); they are printed at the end of the pytest run and written as JSON.

Apart from :class:`FileLoggedChatd`, nothing here starts a daemon: the ``chatd`` fixture in
conftest.py does that.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from conftest import REPO, ChatClient

ROOT = os.geteuid() == 0
TCP_REPAIR = 19  # linux/tcp.h; not exported by Python's socket module
SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture (added in 5.6)

#: Characters that must never reach another client's terminal (docs/protocol.md §1): C0 except
#: TAB, DEL, C1, and the bidi/format characters that change how other text is shown.
CONTROL = frozenset(chr(c) for c in [
    *range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028,
    0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF])


# -- waiting -----------------------------------------------------------------------------------


def wait_until(condition, timeout: float = 10.0, what: str = "condition", interval: float = 0.02):
    """Poll ``condition()`` until it returns something true; fail after ``timeout`` seconds.

    The interval is how often a condition is looked at, not a guess at how long something
    takes: a slow machine only makes the wait longer. ``what`` may be a callable, called on
    timeout, to describe the state the wait ended in.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


# -- what the daemon holds ---------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    threads: int
    fds: int
    rss_kb: int

    def __str__(self) -> str:
        return f"{self.threads} threads, {self.fds} fds, RSS {self.rss_kb / 1024:.1f} MiB"


def _fds(pid: int) -> list[str]:
    """Open descriptors, but not the room history's (the store opens its three files at the
    first history line, after any baseline; a leak check is about sockets and log files)."""
    fds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "history.sqlite3" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                continue
        except OSError:
            pass
        fds.append(fd)
    return fds


def proc_figures(pid: int) -> Figures:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return Figures(threads=int(fields["Threads"]),
                   fds=len(_fds(pid)),
                   rss_kb=int(fields["VmRSS"].split()[0]))


def thread_names(pid: int) -> list[str]:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            names.append(Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip())
        except OSError:
            pass  # the thread ended while we looked
    return sorted(names)


def fd_targets(pid: int) -> list[str]:
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(f"{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return sorted(targets, key=lambda t: int(t.split()[0]))


def settle(pid: int, baseline: Figures, timeout: float = 15.0, what: str = "") -> Figures:
    """Wait until the daemon has exactly ``baseline``'s threads and descriptors again.

    Every connection costs one session thread and one socket, and both must be gone once the
    client is: "exact" is the right tolerance. On timeout the message lists the threads and
    descriptors, which names the leak (``client-17``, ``socket:[…]``).
    """
    deadline = time.monotonic() + timeout
    while True:
        now = proc_figures(pid)
        if now.threads == baseline.threads and now.fds == baseline.fds:
            return now
        if time.monotonic() >= deadline:
            pytest.fail(f"{what or 'daemon'} did not return to baseline within {timeout}s: "
                        f"baseline {baseline}, now {now}\nthreads: {thread_names(pid)}\n"
                        f"fds: {fd_targets(pid)}")
        time.sleep(0.02)


# -- the admin socket --------------------------------------------------------------------------


class Admin:
    """One admin connection: ``ask(obj)`` sends a JSON line and returns the parsed reply."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_raw(self) -> bytes:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"admin socket closed before a reply (read {self._buf[:200]!r})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def read(self) -> dict:
        return json.loads(self.read_raw())

    def ask(self, obj) -> dict:
        self.send(json.dumps(obj).encode() + b"\n")
        return self.read()

    def result(self, cmd: str, **args):
        """The result of a command that must succeed."""
        reply = self.ask({"id": cmd, "cmd": cmd, "args": args})
        assert reply.get("ok") is True, reply
        return reply["result"]

    def close(self) -> None:
        self.sock.close()


# -- hurting connections -----------------------------------------------------------------------


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed peer's kernel does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def can_vanish() -> bool:
    """Whether :func:`vanish` works here (TCP_REPAIR needs CAP_NET_ADMIN)."""
    probe = socket.socket()
    try:
        probe.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def vanish(sock: socket.socket) -> None:
    """Close ``sock`` sending nothing at all: no FIN, no RST (TCP_REPAIR mode).

    To chatd this is a half-open connection, as left by a peer that lost power or network:
    nothing arrives, ever. Only when chatd sends does our kernel answer with an RST (it no
    longer knows the connection), as a rebooted peer's kernel would.
    """
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    sock.close()


def server_socket(pid: int, client: socket.socket) -> socket.socket:
    """A duplicate of chatd's end of ``client``'s connection (pidfd_getfd; needs ptrace rights).

    The duplicate shares the open file description, so socket options read or set on it are
    chatd's own. Close it when done (chatd's descriptor stays open).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    want = client.getsockname()
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                err = ctypes.get_errno()
                pytest.skip(f"pidfd_getfd: {os.strerror(err)}")
            sock = socket.socket(fileno=fd)
            try:
                if sock.type == socket.SOCK_STREAM and sock.family == socket.AF_INET \
                        and sock.getpeername() == want:
                    return sock
            except OSError:
                pass
            sock.detach()
            os.close(fd)
    finally:
        os.close(pidfd)
    raise AssertionError(f"chatd (pid {pid}) has no socket connected to {want}")


def in_flight(port: int) -> list[str]:
    """The connections to or from ``port`` with data not yet acknowledged, either way (ss -i).

    Before :func:`vanish`, wait until this is empty: a segment still in flight (or a delayed
    ACK) would reach the vanished socket and draw an RST, so chatd would learn of the vanish
    at once, and the half-open connection would not be silent.
    """
    out = subprocess.run(["ss", "-tnoiH", "state", "established",
                          f"( sport = :{port} or dport = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    busy, head = [], ""
    for line in out.splitlines():
        if line and not line[0].isspace():
            head = line
            continue
        fields = dict(f.split(":", 1) for f in line.split() if ":" in f)
        # bytes_sent counts retransmissions too; bytes_acked counts the connecting side's SYN
        sent = int(fields.get("bytes_sent", 0)) - int(fields.get("bytes_retrans", 0))
        if "unacked" in fields or int(fields.get("bytes_acked", 0)) < sent:
            busy.append(f"{head.strip()} | {line.strip()}")
    return busy


def ss_established(port: int) -> list[str]:
    """``ss -tno`` lines (with timers) of the established connections on local port ``port``."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return [line for line in out.splitlines() if line.strip() and f":{port} " in line]


# -- clients in bulk, disks, a daemon that logs to a file ---------------------------------------


class Swarm:
    """Many non-blocking clients driven by one thread: each sends its lines a few bytes at a
    time (so most of the time it is mid-line) at a steady pace, and keeps whatever arrives,
    until chatd closes it. ``data[i]`` is what client i received; ``ended[i]`` how it ended."""

    def __init__(self, socks: list[socket.socket], lines_per_second: float = 20.0,
                 piece: int = 7) -> None:
        self.socks = socks
        self.data = [b""] * len(socks)
        self.ended: list[str | None] = [None] * len(socks)
        self.sent = [0] * len(socks)
        self._piece = piece
        self._interval = 1.0 / (lines_per_second * 12 / piece)  # ~12-byte lines
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        for sock in self.socks:
            sock.setblocking(False)
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        self._stop.set()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        pending = {}
        for i, sock in enumerate(self.socks):
            selector.register(sock, selectors.EVENT_READ, i)
            pending[i] = b""
        next_send = time.monotonic()
        while pending and not self._stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                next_send = now + self._interval
                for i in list(pending):
                    if not pending[i]:
                        pending[i] = f"line {self.sent[i]}\n".encode()
                        self.sent[i] += 1
                    try:
                        n = self.socks[i].send(pending[i][: self._piece])
                        pending[i] = pending[i][n:]
                    except BlockingIOError:
                        pass
                    except OSError:
                        pass  # reading will tell how it ended
            for key, _ in selector.select(max(0.0, next_send - time.monotonic())):
                i = key.data
                try:
                    chunk = self.socks[i].recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    chunk, self.ended[i] = b"", f"error {exc.errno}"
                if chunk:
                    self.data[i] += chunk
                    continue
                self.ended[i] = self.ended[i] or "eof"
                selector.unregister(self.socks[i])
                del pending[i]
        selector.close()


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(name, size)`` mounts a small tmpfs at tmp_path/name (root only); all are
    unmounted at teardown, after the daemons using them are gone."""
    if not ROOT:
        pytest.skip("mounting a small tmpfs (a disk to fill or make read-only) needs root")
    mounts: list[Path] = []

    def mount(name: str, size: str = "64k") -> Path:
        path = tmp_path / name
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                                 f"chatd-{name}", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
        mounts.append(path)
        return path

    yield mount
    for path in reversed(mounts):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem holding ``directory`` until ENOSPC; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 4096
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]
    finally:
        os.close(fd)
    return filler



class FileLoggedChatd:
    """chatd with --log-file (the ``chatd`` fixture reads events from stderr, so it cannot
    be used here): events are read from the file; stderr is kept to look for tracebacks.
    ``stop()`` ends it (also when it never got to listening: the constructor cleans up)."""

    def __init__(self, base: Path, log_file: Path, config: Path) -> None:
        self.base = base
        self.log_file = log_file
        self.admin_socket = str(base / "admin.sock")
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatd", "-c", str(config), "--port", "0",
             "--log-format", "json", "--log-file", str(log_file),
             "--admin-socket", self.admin_socket, "--state-dir", str(base / "state")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self.stderr = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.port = self.wait_event("listening")["port"]
        except BaseException:
            self.stop()
            raise

    def _read(self) -> None:
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):
            self.stderr += chunk

    def events(self) -> list[dict]:
        out = []
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "<unparsable>", "line": line})
        return out

    def wait_event(self, name: str, timeout: float = 10.0, **fields) -> dict:
        def find():
            assert self.proc.poll() is None, f"chatd exited: {self.stderr.decode()[-2000:]}"
            return next((e for e in self.events() if e.get("event") == name
                         and all(e.get(k) == v for k, v in fields.items())), None)

        return wait_until(find, timeout, what=f"log event {name} {fields} in {self.log_file}")

    def connect(self) -> ChatClient:
        return ChatClient().connect(self.port)

    def stop(self) -> int:
        """SIGTERM, wait, and clean up (idempotent); returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._reader.join(5)
            shutil.rmtree(self.base, ignore_errors=True)


def pad_log_to_page_end(log_file: Path, room: int = 10) -> None:
    """Append a padding line (our own, valid JSON) so that only ``room`` bytes are left in the
    log file's last page: once the disk is full, chatd's next event is cut after ``room``
    bytes, every time (no event is that short), instead of wherever the page happened to end."""
    page = 4096
    size = log_file.stat().st_size
    pad = (page - room - size - len('{"event": "test_padding", "pad": ""}\n')) % page
    with open(log_file, "a") as fh:
        fh.write(json.dumps({"event": "test_padding", "pad": "x" * pad}) + "\n")
    assert log_file.stat().st_size % page == page - room


# -- what a terminal may be shown --------------------------------------------------------------


def check_line(line: str, who: str = "") -> str:
    """A line chatd sent (already decoded strictly as UTF-8, CRLF removed) must hold no control
    character (TAB allowed) and no stray CR/LF."""
    bad = sorted({f"U+{ord(c):04X}" for c in line if c in CONTROL})
    assert not bad, f"{who}: control characters {bad} reached a client: {line!r}"
    return line


# -- the figures for the closing note ----------------------------------------------------------


class FigureBook:
    """Collects rows ``(table, fields)`` during the run; prints them at the end of the session
    and writes them as JSON (``$CHATD_FIGURES`` or ``.pytest_cache/chatd-figures.json``).

    It registers itself as a pytest plugin on first use, so no conftest hook is needed.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict]] = []
        self._config = None

    def attach(self, config) -> FigureBook:
        if self._config is None:
            self._config = config
            config.pluginmanager.register(self, "chatd-figures")
        return self

    def add(self, table: str, **fields) -> None:
        self.rows.append((table, {k: (asdict(v) if isinstance(v, Figures) else v)
                                  for k, v in fields.items()}))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.rows:
            return
        tr = terminalreporter
        tr.section("chatd figures (fuzz inputs, faults injected, soak)")
        for table, fields in self.rows:
            tr.write_line(f"{table}: " + ", ".join(f"{k}={_show(v)}" for k, v in fields.items()))
        path = os.environ.get("CHATD_FIGURES") or str(self._config.rootpath / ".pytest_cache"
                                                      / "chatd-figures.json")
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                json.dump([{"table": t, **f} for t, f in self.rows], fh, indent=1)
            tr.write_line(f"(written to {path})")
        except OSError as exc:
            tr.write_line(f"(could not write {path}: {exc})")


def _show(value) -> str:
    if isinstance(value, dict) and set(value) == {"threads", "fds", "rss_kb"}:
        return str(Figures(**value))
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


BOOK = FigureBook()


@pytest.fixture
def book(request) -> FigureBook:
    """The run's :class:`FigureBook` (import this fixture into a test module to use it)."""
    return BOOK.attach(request.config)
