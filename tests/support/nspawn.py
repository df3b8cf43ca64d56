"""A real systemd for the end-to-end test: a minimal Debian booted in ``systemd-nspawn``.

Used by test_systemd_e2e.py, with the root file system and wheelhouse from e2e_build.py. The
measured facts behind every choice here are in the shared notes (systemd-and-daemon.md, §2).

:func:`check_host`   raises :class:`Unavailable` unless we are root with namespaces and cgroups.
:class:`Container`   boots a root file system on a throw-away overlay, runs commands inside
                     (``run``, ``systemctl``, ``write``), and powers it off, leaving no process,
                     cgroup, mount or /run file behind.
:func:`reap_stale`   removes what a killed earlier run left (``Container.start`` calls it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from support.e2e_build import CACHE, Unavailable, tail

#: nsenter passes our environment (pyenv PATH, PIP_*) into the container unless we replace it.
CONTAINER_ENV = ("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
#: Container (and cgroup) names are this plus the pid of the test process that owns them.
NAME_PREFIX = "chatd-e2e-"
BOOT_TIMEOUT = 60


# --------------------------------------------------------------------------------------------
# the host
# --------------------------------------------------------------------------------------------


def check_host() -> None:
    if os.geteuid() != 0:
        raise Unavailable("needs root (systemd-nspawn, cgroups, mmdebstrap)")
    try:
        for ns in ("mnt", "pid", "uts", "ipc", "cgroup"):
            os.readlink(f"/proc/self/ns/{ns}")
    except OSError as exc:
        raise Unavailable(f"no access to /proc/self/ns: {exc}") from None
    if not _cgroup_hierarchies():
        raise Unavailable("no writable cgroup hierarchy under /sys/fs/cgroup")


# --------------------------------------------------------------------------------------------
# cgroups
# --------------------------------------------------------------------------------------------


def _cgroup_hierarchies() -> list[Path]:
    """Where our process sits in the cgroup2 hierarchy and in v1 ``name=systemd`` (the two
    that nspawn's ``--keep-unit`` creates ``payload/`` and ``supervisor/`` in)."""
    ours = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        ours[controllers] = path.lstrip("/")
    found = []
    if "" in ours:
        for mount in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
            if Path(mount, "cgroup.procs").exists() and Path(mount, "cgroup.controllers").exists():
                found.append(Path(mount, ours[""]))
                break
    if "name=systemd" in ours and Path("/sys/fs/cgroup/systemd/cgroup.procs").exists():
        found.append(Path("/sys/fs/cgroup/systemd", ours["name=systemd"]))
    return [p for p in found if os.access(p, os.W_OK)]


class _Cgroup:
    """A throw-away cgroup (in each hierarchy) for nspawn, so that what ``--keep-unit`` creates
    under the caller's cgroup goes in here and is removed with it, not left in the root."""

    def __init__(self, name: str, create: bool = True) -> None:
        self.paths = [base / name for base in _cgroup_hierarchies()]
        for path in self.paths:
            if create:
                path.mkdir()

    @property
    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.paths]

    def pids(self) -> set[int]:
        pids = set()
        for path in self.paths:
            for procs in path.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in procs.read_text().split())
        return pids

    def kill_all(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, timeout: float = 10.0) -> None:
        """rmdir every cgroup, deepest first; waits for dying processes to leave them."""
        deadline = time.monotonic() + timeout
        for top in self.paths:
            if not top.exists():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for path in [*dirs, top]:
                while True:
                    try:
                        path.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)


def reap_stale() -> list[str]:
    """Kill and remove containers of earlier runs whose test process is gone (killed with
    SIGKILL, say, so its teardown never ran); returns their names."""
    names = {path.name for base in _cgroup_hierarchies() for path in base.glob(f"{NAME_PREFIX}*")}
    propagate = Path("/run/systemd/nspawn/propagate")
    if propagate.is_dir():
        names.update(p.name for p in propagate.glob(f"{NAME_PREFIX}*"))
    reaped = []
    for name in sorted(names):
        owner = name[len(NAME_PREFIX):]
        if not owner.isdigit() or int(owner) == os.getpid() or _alive(int(owner)):
            continue
        cgroup = _Cgroup(name, create=False)
        cgroup.kill_all()
        cgroup.remove()
        _cleanup_run_files(name)
        reaped.append(name)
    return reaped


def _cleanup_run_files(name: str) -> None:
    # /run is not a tmpfs here, so nspawn refuses to remove its propagation directory
    # ("Attempted to remove disk file system under ...") and leaves the empty parents.
    base = Path("/run/systemd/nspawn")
    shutil.rmtree(base / "propagate" / name, ignore_errors=True)
    # nspawn's lock on our root file system, left by a nspawn that was killed: stale once
    # nobody holds it (which is how nspawn itself tells).
    for root in CACHE.glob("rootfs-*"):
        st = root.stat()
        lock_path = base / "locks" / f"inode-{st.st_dev}:{st.st_ino}"
        with contextlib.suppress(OSError), open(lock_path, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock_path.unlink()
    for leftover in (base / "propagate", base / "locks", base):
        with contextlib.suppress(OSError):
            leftover.rmdir()  # only if empty: another container may be using it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


# --------------------------------------------------------------------------------------------
# the container
# --------------------------------------------------------------------------------------------


class Container:
    """One boot of ``root`` with a throw-away overlay, sharing the host's network.

    ``start()`` returns once the container's systemd reports ``running``; ``run()`` executes a
    command inside (as root, or as ``user``), with a clean environment; ``stop()`` powers it
    off and cleans up. ``binds`` maps host paths to read-only paths inside.
    """

    def __init__(self, root: Path, binds: dict[Path, str], workdir: Path) -> None:
        self.root = root
        self.binds = binds
        self.name = f"{NAME_PREFIX}{os.getpid()}"
        self.console_log = workdir / "console.log"
        self.proc: subprocess.Popen | None = None
        self.leader: int | None = None
        self._cgroup: _Cgroup | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        reap_stale()
        self._cleanup_run_files()
        self._cgroup = _Cgroup(self.name)
        argv = ["systemd-nspawn", "--quiet", "--directory", str(self.root), "--volatile=overlay",
                "--register=no", "--keep-unit", "--machine", self.name, "--console=pipe",
                *(f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()), "--boot"]
        # The shell moves itself into the throw-away cgroup, then becomes nspawn.
        enter = 'for f in $CHATD_CGROUPS; do echo $$ > "$f" || exit 125; done; exec "$@"'
        env = dict(os.environ, CHATD_CGROUPS=" ".join(self._cgroup.procs_files))
        with open(self.console_log, "wb") as console:
            self.proc = subprocess.Popen(["sh", "-c", enter, "sh", *argv], stdin=subprocess.DEVNULL,
                                         stdout=console, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        try:
            self.leader = self._find_leader()
            self._wait_running()
        except BaseException:
            self.stop()
            raise

    def _find_leader(self) -> int:
        """The container's PID 1 (systemd): a child of nspawn whose executable is systemd."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.proc.returncode}:\n"
                                   f"{self.console()}")
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    stat = Path(entry.path, "stat").read_text()
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    if ppid == self.proc.pid and os.readlink(f"{entry.path}/exe").endswith("/systemd"):
                        return int(entry.name)
                except (OSError, ValueError, IndexError):
                    continue
            time.sleep(0.02)
        raise RuntimeError(f"no systemd in the container after {BOOT_TIMEOUT}s:\n{self.console()}")

    def _wait_running(self) -> None:
        """``is-system-running --wait``, retried while the container's manager is not up yet."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            proc = self.run("systemctl", "is-system-running", "--wait", check=False,
                            timeout=max(1.0, deadline - time.monotonic()))
            state = proc.stdout.strip()
            if state == "running":
                return
            if state == "degraded":
                failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout
                raise RuntimeError(f"the container booted degraded; failed units:\n{failed}")
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the container is not running ({state!r}, "
                                   f"{proc.stderr.strip()!r}):\n{self.console()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        """``systemctl poweroff`` and wait; SIGKILL everything in its cgroup as a last resort.
        Then remove the cgroups and what nspawn leaves in /run."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                if self.leader is not None:
                    self.run("systemctl", "poweroff", check=False, timeout=10)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._cgroup.kill_all()
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
        finally:
            if self._cgroup is not None:
                if self._cgroup.pids():
                    self._cgroup.kill_all()
                self._cgroup.remove()
                self._cgroup = None
            self._cleanup_run_files()

    def _cleanup_run_files(self) -> None:
        _cleanup_run_files(self.name)

    def leftovers(self) -> list[str]:
        """Anything of this container still on the host (for the test to assert [] after stop)."""
        found = []
        if self.proc is not None and self.proc.poll() is None:
            found.append(f"nspawn process {self.proc.pid}")
        for base in _cgroup_hierarchies():
            if (base / self.name).exists():
                found.append(f"cgroup {base / self.name}")
        mounts = Path("/proc/self/mountinfo").read_text()
        found += [f"mount {line}" for line in mounts.splitlines()
                  if str(self.root) in line or self.name in line]
        if Path("/run/systemd/nspawn/propagate", self.name).exists():
            found.append(f"/run/systemd/nspawn/propagate/{self.name}")
        return found

    def console(self) -> str:
        try:
            return tail(self.console_log.read_text(errors="replace"), 40)
        except OSError:
            return ""

    # -- inside --------------------------------------------------------------------------------

    def run(self, *argv: str, user: str | None = None, input: str | None = None,
            check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the container (all its namespaces), with a minimal environment.
        ``user`` runs it as that user with that user's groups (setpriv)."""
        inner = list(argv)
        if user is not None:
            inner = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *inner]
        full = ["nsenter", "--target", str(self.leader), "--all", *CONTAINER_ENV, *inner]
        proc = subprocess.run(full, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"in the container: {shlex.join(inner)} exited "
                                 f"{proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("sh", "-ec", script, **kwargs)

    def systemctl(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("systemctl", *args, **kwargs)

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "--value", "-p", prop, unit).stdout.strip()

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Create or replace a file inside (parent directories too)."""
        self.run("sh", "-ec", 'mkdir -p "$(dirname "$1")"; cat > "$1"; chmod "$2" "$1"',
                 "sh", path, f"{mode:o}", input=text)

    def read(self, path: str) -> str:
        return self.run("cat", path).stdout

    def remove(self, *paths: str) -> None:
        self.run("rm", "-f", *paths)
