"""Shared test helpers: the real ``chatd`` as a subprocess, and a line-oriented TCP chat client.

The live tests use the real thing at the edges (STYLE.md principle 10): ``chatd`` (a script
like the installed one, :func:`chatd_executable`) in a subprocess on ``--port 0``, real TCP
sockets, and readiness by condition. Nothing here sleeps to synchronise; every wait is for a
condition and has a deadline, so a loaded machine only makes the suite slower, never flaky.

Fixtures
    ``chatd``   factory: ``chatd(limits={"rate": 100}, server={"motd": "hi"}, args=[...])``
                writes those sections to a TOML file, starts the daemon and waits for its
                ``listening`` event. Returns a :class:`ChatServer`. At teardown every client is
                closed, the daemon is killed if still running, and the test fails if the daemon
                printed (or logged) a Python traceback.
    ``server``  ``chatd()`` with the default configuration.

Classes
    :class:`ChatServer`  ``.port``, ``.events``, ``.lines``, ``.wait_event()``,
                         ``.find_events()``, ``.connect()``, ``.connect_many()``,
                         ``.client_id()``, ``.terminate()``, ``.stderr_text()``.
    :class:`ChatClient`  ``connect()``, ``send_line()``, ``send_raw()``, ``read_line()``,
                         ``expect()``, ``wait_for()``, ``sync()``, ``expect_silence()``,
                         ``expect_closed()``, ``set_nick()``, ``join()``, ``close()`` (clean
                         FIN), ``reset()`` (RST), ``abort()``; ``received``, ``skipped``.
    :func:`run_in_threads` runs one function per client concurrently, with a deadline.

Ordering rule for tests: a line that another client's action causes may be queued just after
that client got its own reply. So expect such notices explicitly (``b.expect("*** a left
lobby")``) before relying on "the next line is X"; ``sync()``/``expect_silence()`` are exact for
a client's own actions and can only miss (never invent) a stray line caused by someone else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MOTD = "Type /help for the list of commands."
TRACEBACK = "Traceback (most recent call last)"

# Deterministic, deadline-free property tests: a loaded CI machine must not turn into failures.
settings.register_profile("chatd", deadline=None, derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "chatd"))


def pytest_configure(config):
    if not any(m.startswith("slow:") for m in config.getini("markers")):
        config.addinivalue_line("markers", "slow: takes more than about 5 seconds")
    # Every chatd a test starts gets its own --state-dir; one started without (a test of the
    # defaults, a forgotten option) must still never write the user's own state directory,
    # whose history a later `chatd` would replay to people (issue 23 §4).
    os.environ.pop("STATE_DIRECTORY", None)
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="chatd-test-state-")


# --------------------------------------------------------------------------------------------
# the daemon
# --------------------------------------------------------------------------------------------


def toml_dumps(sections: dict[str, dict]) -> str:
    """``{"limits": {"rate": 5}}`` -> TOML text. Only the scalar types chatd's config uses."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)  # a JSON string is a TOML basic string
        raise TypeError(f"no TOML for {v!r}")

    out = []
    for section, keys in sections.items():
        out.append(f"[{section}]")
        out.extend(f"{k} = {value(v)}" for k, v in keys.items())
        out.append("")
    text = "\n".join(out)
    assert tomllib.loads(text) == sections, "toml_dumps produced something else"
    return text


def _matches(event: dict, name: str, fields: dict) -> bool:
    if event.get("event") != name:
        return False
    for key, want in fields.items():
        got = event.get(key)
        if callable(want):
            if not want(got):
                return False
        elif got != want:
            return False
    return True


_EXECUTABLE: list[str] = []


def chatd_executable() -> str:
    """A ``chatd`` script like the one pip installs (a shebang to this Python, ``main()``),
    made once per test run: chatd runs as itself, named ``chatd`` (``/proc/PID/comm``), and an
    upgrade execs it again (chatd/lifecycle/reexec.py). ``PYTHONPATH`` (:class:`ChatServer`) makes it
    import this checkout's code."""
    if not _EXECUTABLE:
        directory = tempfile.mkdtemp(prefix="chatd-bin-")
        path = os.path.join(directory, "chatd")
        with open(path, "w") as script:
            script.write(f"#!{sys.executable}\nimport sys\nfrom chatd.cli import main\n"
                         "if __name__ == '__main__':\n    sys.exit(main())\n")
        os.chmod(path, 0o755)
        os.chmod(directory, 0o755)  # chatd run as another user (test_history_file.py) too
        _EXECUTABLE.append(path)
    return _EXECUTABLE[0]


class ChatServer:
    """One ``chatd`` subprocess, logging JSON to a pipe that a thread collects.

    ``events`` holds every stderr line that parsed as a JSON object, in order; ``lines`` holds
    every stderr line (JSON or not) for diagnostics. Use :meth:`wait_event` rather than reading
    ``events`` directly when the event may not have happened yet.
    """

    def __init__(self, config_path: Path, sections: dict, args=(), cwd: Path | None = None,
                 env: dict | None = None, launcher=(), pass_fds=()):
        """``env`` adds environment variables; ``launcher`` is a command prefix (e.g. a
        socket-activation trampoline) and ``pass_fds`` the descriptors it must inherit."""
        self.config_path = config_path
        server = sections.get("server", {})
        self.server_name = server.get("server_name", "chatd")
        self.motd_lines = server.get("motd", DEFAULT_MOTD).splitlines()
        self.events: list[dict] = []
        self.lines: list[str] = []
        self.stdout: list[str] = []
        self.clients: list[ChatClient] = []
        self._reported = False
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._cond = threading.Condition()
        self._stderr_done = threading.Event()
        given, env = env, {**os.environ, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        # Future-proof: never share the default admin socket with another test's daemon. A short
        # directory, because a Unix socket path must fit in 108 bytes.
        self._rundir = tempfile.mkdtemp(prefix="chatd-")
        self.admin_socket = os.path.join(self._rundir, "admin.sock")
        if "CHATD_ADMIN_SOCKET" in (given or {}):  # the test's own ("" = chatd's default)
            self.admin_socket = given["CHATD_ADMIN_SOCKET"] or None
        else:
            env["CHATD_ADMIN_SOCKET"] = self.admin_socket
        # Bans persist in the state directory: each daemon gets its own unless the test passes
        # --state-dir (e.g. to restart on the same state).
        self.state_dir = os.path.join(self._rundir, "state")
        defaults = [] if "--state-dir" in args else ["--state-dir", self.state_dir]
        self.argv = [*launcher, chatd_executable(), "-c", str(config_path),
                     "--port", "0", "--log-format", "json", *defaults, *args]
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd or config_path.parent, env=env, pass_fds=pass_fds)
        #: The chatd serving now, once an upgrade (chatctl upgrade, SIGUSR2) replaced
        #: ``proc``: not our child (we cannot wait for it), so it is tracked by pid.
        self.pid = self.proc.pid
        self._successors: list[int] = []
        threading.Thread(target=self._read_stderr, daemon=True).start()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    # -- collection --------------------------------------------------------------------------

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            with self._cond:
                self.lines.append(line)
                if isinstance(event, dict):
                    self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._stderr_done.set()
            self._cond.notify_all()

    def _read_stdout(self) -> None:
        for raw in self.proc.stdout:  # drained so the daemon can never block on a full pipe
            self.stdout.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def stderr_text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    # -- waiting -----------------------------------------------------------------------------

    def wait_event(self, name: str, timeout: float = 5.0, **fields) -> dict:
        """The first logged event called ``name`` whose fields match, waiting up to ``timeout``.

        A field value may be a callable, used as a predicate on the event's value:
        ``wait_event("client_disconnected", reason="idle timeout", duration=lambda d: d >= 1)``.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if _matches(event, name, fields):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stderr_done.is_set():
                    break
                self._cond.wait(remaining)
        shown = {k: ("<predicate>" if callable(v) else v) for k, v in fields.items()}
        status = self.proc.poll()
        why = f"chatd exited ({status})" if status is not None else f"not within {timeout}s"
        self._reported = True  # the stderr shown here need not be shown again at teardown
        pytest.fail(f"no log event {name!r} {shown}: {why}; stderr was:\n"
                    + self.stderr_text()[-4000:])

    def find_events(self, name: str, **fields) -> list[dict]:
        """Every event logged so far that matches (no waiting)."""
        with self._cond:
            return [e for e in self.events if _matches(e, name, fields)]

    def wait_listening(self, timeout: float = 10.0) -> None:
        event = self.wait_event("listening", timeout=timeout)
        self.port = int(event["port"])
        self.host = event.get("host", self.host)

    # -- clients -----------------------------------------------------------------------------

    def connect(self, **kwargs) -> ChatClient:
        """A :class:`ChatClient` connected to this server, greeting consumed (``greet=False`` to
        read it yourself). It is closed at teardown."""
        kwargs.setdefault("motd", self.motd_lines)
        kwargs.setdefault("server_name", self.server_name)
        client = ChatClient()
        self.clients.append(client)
        return client.connect(self.port, **kwargs)

    def connect_many(self, n: int, **kwargs) -> list[ChatClient]:
        """``n`` clients in the lobby, every ``joined lobby`` notice among them consumed.

        Each new client does a ``/who`` round trip before the next one connects: once it has the
        answer it is surely in the lobby, so the notices reach the earlier clients in connect
        order whatever the server's thread scheduling.
        """
        clients = []
        for _ in range(n):
            client = self.connect(**kwargs)
            assert client.sync() == [], f"{client!r}: unexpected lines after the greeting"
            clients.append(client)
        for i, client in enumerate(clients):
            for later in clients[i + 1:]:
                client.expect(f"*** {later.nick} joined lobby")
        return clients

    def client_id(self, client: ChatClient, timeout: float = 5.0):
        """The ``client_id`` the server logged for ``client``, found by its local port in ``peer``."""
        port = re.compile(rf"\b{client.local_port}\b")
        event = self.wait_event("client_connected", timeout,
                                peer=lambda p: port.search(str(p)) is not None)
        return event["client_id"]

    # -- stopping ----------------------------------------------------------------------------

    def succeeded_by(self, pid: int) -> None:
        """An upgrade handed everything to ``pid``: signals and teardown go to it from now on."""
        self._successors.append(pid)
        self.pid = pid

    def terminate(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig`` (SIGTERM) and wait up to ``timeout`` for the exit; returns the status
        (None for a successor after an upgrade: not our child, its status is not ours to see)."""
        if self.pid != self.proc.pid:
            os.kill(self.pid, sig)
            if not wait_gone(self.pid, timeout):
                pytest.fail(f"chatd {self.pid} did not exit within {timeout}s of signal {sig}; "
                            "stderr:\n" + self.stderr_text()[-4000:])
            self._stderr_done.wait(5)
            return None
        self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"chatd did not exit within {timeout}s of signal {sig}; stderr:\n"
                        + self.stderr_text()[-4000:])
        self._stderr_done.wait(5)  # so that ``events`` is complete when this returns
        return status

    def close(self) -> str | None:
        """Teardown: close clients, stop the daemon; returns a complaint if it printed a traceback."""
        for client in self.clients:
            client.abort()
        # A successor a failed test never got to name still holds our stderr pipe: without
        # this, closing the pipe below would wait for it forever.
        successors = {e["pid"] for e in self.find_events("listening") if "pid" in e}
        for pid in sorted(successors - {self.proc.pid} | set(self._successors)):
            if not wait_gone(pid, 0):
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid, 10)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._stderr_done.wait(10)
        self.proc.stderr.close()
        self.proc.stdout.close()
        shutil.rmtree(self._rundir, ignore_errors=True)
        text = self.stderr_text()
        if TRACEBACK in text and not self._reported:
            return f"chatd printed a traceback (pid {self.proc.pid}):\n{text[-6000:]}"
        return None


def wait_gone(pid: int, timeout: float) -> bool:
    """Until process ``pid`` has exited (gone, or a zombie nobody has reaped yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                gone = stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
        except (FileNotFoundError, ProcessLookupError):
            gone = True
        if gone or time.monotonic() >= deadline:
            return gone
        time.sleep(0.02)


def cluster_secret(directory: Path) -> Path:
    """The test's cluster secret (``chatd --gen-cluster-secret``'s format), made once."""
    path = directory / "cluster.secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(32).hex().encode() + b"\n")
        os.close(fd)
    return path


def cluster_seal(directory: Path):
    """chatd's own sealing (chatd/cluster/codec.py) with the test's secret: for a test that
    plays a node writing to Redis, as opposed to someone without the secret."""
    from chatd.cluster.codec import Seal
    from chatd.cluster.secret import read_secret

    return Seal(read_secret(str(cluster_secret(directory))))


@pytest.fixture
def chatd(tmp_path):
    """Factory: ``chatd(server={...}, limits={...}, logging={...}, args=[...]) -> ChatServer``."""
    servers: list[ChatServer] = []

    def start(*, args=(), env=None, launcher=(), pass_fds=(), **sections) -> ChatServer:
        config = tmp_path / f"chatd-{len(servers)}.toml"
        # No replay on connect unless a test asks for it ([history]): the greeting of most
        # tests is exact, and room history (test_history.py) is tested where it is the point.
        sections.setdefault("history", {"history_on_join": 0})
        cluster = sections.get("cluster")
        if cluster and cluster.get("redis_url") and "cluster_secret_file" not in cluster:
            # the nodes of one test share a secret, as every node of a cluster must
            sections["cluster"] = {**cluster, "cluster_secret_file": str(cluster_secret(tmp_path))}
        config.write_text(toml_dumps(sections))
        srv = ChatServer(config, sections, args, env=env, launcher=launcher, pass_fds=pass_fds)
        servers.append(srv)
        srv.wait_listening()
        return srv

    yield start
    complaints = [c for c in (srv.close() for srv in servers) if c]
    if complaints:
        pytest.fail("\n\n".join(complaints))


@pytest.fixture
def server(chatd) -> ChatServer:
    """A daemon with the default configuration."""
    return chatd()


# --------------------------------------------------------------------------------------------
# the chat client
# --------------------------------------------------------------------------------------------


class ConnectionClosed(AssertionError):
    """The server closed (or reset) the connection while the test expected a line."""


class ChatClient:
    """A netcat-like client over a real TCP socket that reads whole CRLF lines.

    Every line read is appended to ``received`` (the transcript, for diagnostics); the lines that
    the last :meth:`wait_for` skipped are in ``skipped``. ``nick`` is the client's current nick as
    far as the helpers know it (set by :meth:`connect` and :meth:`set_nick`).
    """

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.nick: str | None = None
        self.local_port: int | None = None
        self.received: list[str] = []
        self.skipped: list[str] = []
        self.replayed: list[str] = []  # history entries replayed with the greeting
        self.eof = False
        self.was_reset = False
        self._buf = bytearray()

    def __repr__(self) -> str:
        return f"<ChatClient {self.nick or '?'} :{self.local_port}>"

    # -- connecting --------------------------------------------------------------------------

    def connect(self, port: int, host: str = "127.0.0.1", *, greet: bool = True,
                motd: list[str] | None = None, server_name: str | None = None,
                rcvbuf: int | None = None, source: str | None = None,
                timeout: float = 5.0) -> ChatClient:
        """Connect and, with ``greet``, read the greeting, the nick and the MOTD.

        ``motd`` lists the expected MOTD lines (without ``*** ``); when it is None the MOTD is
        whatever arrives before the answer to a ``/who`` barrier. ``rcvbuf`` sets SO_RCVBUF
        before connecting (a client that will never read); ``source`` binds a local address
        (another 127.x address counts as another IP).
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.local_port = sock.getsockname()[1]
        if greet:
            self.read_greeting(motd, server_name, timeout)
        return self

    def read_greeting(self, motd=None, server_name=None, timeout: float = 5.0) -> list[str]:
        """Read ``*** welcome to NAME``, ``*** you are NICK`` and the MOTD; returns the MOTD."""
        welcome = self.read_line(timeout)
        assert welcome.startswith("*** welcome to "), f"not a greeting: {welcome!r}"
        if server_name is not None:
            assert welcome == f"*** welcome to {server_name}", welcome
        you_are = self.read_line(timeout)
        m = re.fullmatch(r"\*\*\* you are (\S+)", you_are)
        assert m, f"second greeting line is not '*** you are NICK': {you_are!r}"
        self.nick = m.group(1)
        if motd is None:
            lines = self.sync(timeout)
        else:
            lines = [self.read_line(timeout) for _ in motd]
            assert lines == [f"*** {line}" for line in motd], "wrong MOTD"
        lines, replayed = split_history(lines)
        self.replayed = self.replayed or replayed
        assert all(line.startswith("*** ") for line in lines), lines
        return [line[4:] for line in lines]

    # -- sending -----------------------------------------------------------------------------

    def send_line(self, text: str) -> None:
        self.send_raw(text.encode("utf-8") + b"\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- reading -----------------------------------------------------------------------------

    def read_line(self, timeout: float = 5.0) -> str:
        """The next line, without its CRLF. Fails if none arrives in time or the peer closes."""
        deadline = time.monotonic() + timeout
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                raw = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                assert raw.endswith(b"\r\n"), f"{self!r}: line not terminated by CRLF: {raw!r}"
                line = raw[:-2].decode("utf-8")  # strict: the server only sends UTF-8
                self.received.append(line)
                return line
            if self.eof:
                raise ConnectionClosed(
                    f"{self!r}: connection {'reset' if self.was_reset else 'closed'} by the "
                    f"server (partial line {bytes(self._buf)[:200]!r}); last lines: "
                    f"{self.received[-8:]}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self!r}: no line within {timeout}s; last lines: "
                                     f"{self.received[-8:]}")
            self._recv(remaining)

    def _recv(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(262144)
        except (socket.timeout, BlockingIOError):
            return
        except ConnectionResetError:
            self.eof = self.was_reset = True
            return
        if data:
            self._buf += data
        else:
            self.eof = True

    def expect(self, line: str, timeout: float = 5.0) -> str:
        """The next line must be exactly ``line``."""
        got = self.read_line(timeout)
        assert got == line, f"{self!r}: expected {line!r}, got {got!r}"
        return got

    def wait_for(self, match: str | Callable[[str], bool], timeout: float = 5.0) -> str:
        """Read until a line equals ``match`` (or satisfies it, if callable); returns it.

        The lines read on the way are kept in ``skipped`` (and in ``received``).
        """
        pred = match if callable(match) else (lambda line: line == match)
        deadline = time.monotonic() + timeout
        self.skipped = []
        while True:
            try:
                line = self.read_line(max(0.0, deadline - time.monotonic()))
            except AssertionError as exc:  # keeps the type: ConnectionClosed stays one
                raise type(exc)(f"waiting for {match!r}, skipped {self.skipped[-8:]}: {exc}") from None
            if pred(line):
                return line
            self.skipped.append(line)

    def saw(self, line: str, timeout: float = 5.0) -> None:
        """``line`` was read already (perhaps skipped by an earlier wait) or arrives in time.

        For a line whose order relative to another awaited line is not part of the contract,
        e.g. a sender's last line and a notice raised on another node.
        """
        if line not in self.received:
            self.wait_for(line, timeout)

    def sync(self, timeout: float = 5.0) -> list[str]:
        """Round-trip barrier: send ``/who``, return every line that arrived before its answer.

        The server handles one client's lines in order, so once the answer is here everything
        this client sent earlier has been handled, and whatever the server queued for it before
        handling ``/who`` has been read.
        """
        self.send_line("/who")
        self.wait_for(lambda line: line.startswith("*** in "), timeout)
        return list(self.skipped)

    def expect_silence(self, timeout: float = 5.0) -> None:
        """Nothing arrived that was not read yet (checked with a :meth:`sync` round trip)."""
        extra = self.sync(timeout)
        assert extra == [], f"{self!r}: unexpected lines {extra}"

    def expect_closed(self, timeout: float = 5.0) -> list[str]:
        """Read until the server closes the connection; returns the lines read on the way."""
        deadline = time.monotonic() + timeout
        lines = []
        while True:
            try:
                lines.append(self.read_line(max(0.0, deadline - time.monotonic())))
            except ConnectionClosed:
                return lines
            except AssertionError:
                raise AssertionError(f"{self!r}: still open after {timeout}s; read {lines}") from None

    # -- conveniences ------------------------------------------------------------------------

    def set_nick(self, nick: str, timeout: float = 5.0) -> None:
        self.send_line(f"/nick {nick}")
        self.expect(f"*** you are now {nick}", timeout)
        self.nick = nick

    def join(self, room: str, timeout: float = 5.0) -> int:
        """``/join room``; returns the member count from the reply."""
        self.send_line(f"/join {room}")
        line = self.wait_for(lambda l: l.startswith("*** you joined ") or l.startswith("*** error"),
                             timeout)
        m = re.fullmatch(r"\*\*\* you joined (\S+) \((\d+) members?\)", line)
        assert m, f"{self!r}: /join {room}: {line!r}"
        return int(m.group(2))

    def close(self, timeout: float = 5.0) -> None:
        """Hang up cleanly, as netcat does at the end of its input.

        Sends FIN, then reads (into ``received``) until the server closes too. Closing a socket
        with unread input would send an RST instead, which the server rightly reports as
        ``connection reset``; :meth:`reset` does that on purpose.
        """
        if self.sock is None or self.sock.fileno() < 0:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + timeout
            while not self.eof and time.monotonic() < deadline:
                self._recv(deadline - time.monotonic())
        except OSError:
            pass
        self.sock.close()

    def abort(self) -> None:
        """Close at once, whatever is unread (teardown)."""
        if self.sock is not None:
            self.sock.close()

    def reset(self) -> None:
        """Close with an RST instead of a FIN (SO_LINGER 0), as a crashed peer would."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def split_history(lines: list[str]) -> tuple[list[str], list[str]]:
    """``lines`` without a SPEC §10 history block, and the block's entries."""
    start = next((i for i, l in enumerate(lines) if l.startswith("*** history of ")), None)
    if start is None:
        return lines, []
    end = lines.index("*** end of history", start)
    return lines[:start] + lines[end + 1:], lines[start + 1:end]


def read_until(sock, marker: bytes, timeout: float = 5.0) -> bytes:
    """Read raw bytes from ``sock`` (a plain or TLS socket) until ``marker`` has arrived;
    returns all of them. Fails if the peer closes first or the deadline passes."""
    deadline = time.monotonic() + timeout
    data = b""
    while marker not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} within {timeout}s; got {data!r}"
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}; got {data!r}"
        data += chunk
    return data


def run_in_threads(func, items, timeout: float) -> list:
    """Run ``func(item)`` for each item in its own thread; return the results in order.

    Re-raises the first exception; fails if any thread is still running after ``timeout``.
    """
    results = [None] * len(items)
    errors: list[BaseException] = []

    def body(i, item):
        try:
            results[i] = func(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i, it), daemon=True) for i, it in enumerate(items)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    alive = sum(t.is_alive() for t in threads)
    assert not alive, f"{alive} of {len(threads)} threads still running after {timeout}s"
    return results
