"""The real ``chatd`` as a subprocess: the ``chatd`` and ``server`` fixtures and :class:`ChatServer`.

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
    ``pair``    alice and bob on ``server``, in the lobby, named, every notice consumed
                (test_chat*.py; a module may define its own ``pair``, as test_framing.py does).
    ``trio``    ``pair`` and carol.

:class:`ChatServer` has ``.port``, ``.events``, ``.lines``, ``.wait_event()``,
``.find_events()``, ``.connect()`` (a :class:`support.client.ChatClient`), ``.connect_many()``,
``.client_id()``, ``.terminate()``, ``.stderr_text()``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import pytest

from support.client import ChatClient
from support.paths import REPO, SECRET_MARK, TRACEBACK
from support.waiting import wait_gone

DEFAULT_MOTD = "Type /help for the list of commands."


def toml_dumps(sections: dict[str, dict]) -> str:
    """``{"limits": {"rate": 5}}`` -> TOML text. Only the types chatd's config uses."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)  # a JSON string is a TOML basic string
        if isinstance(v, list):
            return "[" + ", ".join(value(item) for item in v) + "]"
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
        self.irc_port: int | None = None
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
        self.irc_port = event.get("irc_port")  # docs/protocol.md §14, when irc_port is set

    # -- clients -----------------------------------------------------------------------------

    def connect(self, **kwargs) -> ChatClient:
        """A :class:`ChatClient` connected to this server, greeting consumed (``greet=False`` to
        read it yourself). It is closed at teardown."""
        kwargs.setdefault("motd", self.motd_lines)
        kwargs.setdefault("server_name", self.server_name)
        client = ChatClient()
        self.clients.append(client)
        return client.connect(self.port, **kwargs)

    def irc(self, nick: str, caps=(), **kwargs):
        """An IRC client (support/irc.py) registered as ``nick`` on the IRC port; closed at
        teardown."""
        from support.irc import IrcClient

        client = IrcClient()
        self.clients.append(client)
        return client.register(self.irc_port, nick, caps, **kwargs)

    def irc_raw(self):
        """An IRC client connected to the IRC port that has sent nothing yet."""
        from support.irc import IrcClient

        client = IrcClient()
        self.clients.append(client)
        return client.connect(self.irc_port, greet=False)

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
        leaked = [line for line in text.splitlines() if SECRET_MARK in line.lower()]
        if leaked:
            return f"chatd logged a test password (they all hold {SECRET_MARK!r}): {leaked[:3]}"
        return None


def start_raw(*args, timeout: float = 15.0) -> subprocess.CompletedProcess:
    """Run chatd expecting it to fail at start (it must not reach `listening`)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "chatd", "--port", "0", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, env=env)


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


@pytest.fixture
def pair(server):
    """alice (guest-1) and bob (guest-2) in the lobby, every notice so far consumed."""
    alice, bob = server.connect_many(2)
    alice.set_nick("alice")
    bob.expect("*** guest-1 is now known as alice")
    bob.set_nick("bob")
    alice.expect("*** guest-2 is now known as bob")
    return alice, bob


@pytest.fixture
def trio(pair, server):
    """alice, bob and carol (guest-3) in the lobby, every notice so far consumed."""
    alice, bob = pair
    carol = server.connect()
    carol.sync()
    alice.expect("*** guest-3 joined lobby")
    bob.expect("*** guest-3 joined lobby")
    carol.set_nick("carol")
    alice.expect("*** guest-3 is now known as carol")
    bob.expect("*** guest-3 is now known as carol")
    return alice, bob, carol
