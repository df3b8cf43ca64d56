"""Build what the end-to-end test boots and installs: a cached minimal Debian root file system
and a wheelhouse of chatd and its dependencies. Used by test_systemd_e2e.py with nspawn.py.

:func:`ensure_tools`     installs systemd-container and mmdebstrap with apt-get when missing.
:func:`rootfs`           the cached minimal root file system (built once per package list with
                         mmdebstrap, kept in ``/var/cache/chatd-test``; never modified after that,
                         because every boot runs on a throw-away overlay).
:func:`build_wheelhouse` chatd's wheel plus its dependencies' wheels, for an offline install.

Every failure that means "this machine cannot do it" (no apt, no mirror, no package index)
raises :class:`Unavailable`, which the test turns into a skip; anything else is a real error.
The measured facts behind these choices are in the shared notes (systemd-and-daemon.md, §2).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

SUITE = "bookworm"
#: python3-venv for /opt/chatd; procps for ps/pgrep/kill; logrotate to run etc/logrotate.d/chatd;
#: libnss-systemd resolves the DynamicUser's name.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "libnss-systemd", "python3", "python3-venv",
            "procps", "logrotate")
#: Bump to rebuild every cached root file system (e.g. after changing how it is built).
ROOTFS_FORMAT = 1
CACHE = Path(os.environ.get("CHATD_TEST_CACHE", "/var/cache/chatd-test"))
BUILD_TIMEOUT = 600
#: Wheels the container's Python needs and the host's may not: pip evaluates environment markers
#: for the Python that builds the wheelhouse. bookworm's python3 is 3.11.2, and redis requires
#: ``async-timeout; python_full_version < '3.11.3'``.
TARGET_ONLY = ("async-timeout>=4.0.3",)


class Unavailable(Exception):
    """This machine cannot run the end-to-end test; the message says why (a skip reason)."""


def _run(argv, *, timeout: float = 60, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, stdin=kwargs.pop("stdin", subprocess.DEVNULL), capture_output=True,
                          text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# tools
# --------------------------------------------------------------------------------------------


def ensure_tools() -> None:
    """systemd-nspawn and mmdebstrap, installed with apt-get if missing (first without, then
    with ``apt-get update``). Installing systemd-container may upgrade the host's systemd
    package to the matching point release; the notes found that harmless."""
    if _have_tools():
        return
    if shutil.which("apt-get") is None:
        raise Unavailable("systemd-nspawn/mmdebstrap missing and no apt-get to install them")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "systemd-container", "mmdebstrap"]
    proc = _run(install, check=False, env=env, timeout=300)
    if proc.returncode != 0:
        _run(["apt-get", "update", "-qq"], check=False, env=env, timeout=300)
        proc = _run(install, check=False, env=env, timeout=300)
    if proc.returncode != 0 or not _have_tools():
        raise Unavailable(f"cannot install systemd-container and mmdebstrap: {tail(proc.stderr, 5)}")


def _have_tools() -> bool:
    return all(shutil.which(tool) for tool in ("systemd-nspawn", "mmdebstrap", "nsenter"))


def debian_mirror() -> str:
    """The host's Debian mirror (deb822 or one-line sources), else deb.debian.org."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        for stanza in deb822.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        m = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", legacy.read_text(), re.M)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


# --------------------------------------------------------------------------------------------
# the cached root file system
# --------------------------------------------------------------------------------------------


def rootfs() -> Path:
    """``/var/cache/chatd-test/rootfs-<hash>``, built by mmdebstrap (minbase) if missing.

    The hash covers the suite and package list, so changing PACKAGES builds a new one (and
    removes the old ones). A build goes to a temporary directory that is renamed when complete,
    under a lock, so an interrupted or concurrent run never sees a half-built tree.
    """
    def build(tmp: Path) -> None:
        mirror = debian_mirror()
        argv = ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                SUITE, str(tmp), mirror]
        try:
            proc = _run(argv, check=False, timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"mmdebstrap from {mirror} took more than {BUILD_TIMEOUT}s") from None
        if proc.returncode != 0:
            raise Unavailable(f"cannot build the {SUITE} root file system from {mirror} "
                              f"(mmdebstrap exit {proc.returncode}): {tail(proc.stderr, 8)}")

    return _cached("rootfs", f"{ROOTFS_FORMAT} {SUITE} minbase {' '.join(sorted(PACKAGES))}", build)


def _cached(kind: str, recipe: str, build) -> Path:
    """``CACHE/<kind>-<hash of recipe>``, made by ``build(tmp)`` if missing: under a lock, into
    a temporary directory renamed when complete (an interrupted or concurrent run never sees a
    half-built tree), replacing older ones of that kind."""
    path = CACHE / f"{kind}-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"
    if path.is_dir():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / ".lock"):
        if path.is_dir():
            return path
        for old in CACHE.glob(f"{kind}-*"):  # stale recipes, interrupted builds
            shutil.rmtree(old, ignore_errors=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(path)
    return path


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------------------------
# the wheelhouse
# --------------------------------------------------------------------------------------------


def build_wheelhouse(repo: Path, dest: Path) -> None:
    """chatd's wheel and the wheels of its dependencies (and of its build backend), in ``dest``.

    The dependency wheels are cached in ``/var/cache/chatd-test/wheels-<hash of the
    requirements>``, so only the first run needs the package index; chatd itself is built every
    time, offline, from a copy of the working tree (tracked and untracked-but-not-ignored
    files), so the build leaves nothing in the repository.
    """
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    requirements = sorted([*pyproject["project"].get("dependencies", []),
                           *pyproject["build-system"]["requires"], "wheel", *TARGET_ONLY])
    deps = _dependency_wheels(requirements)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chatd-src-") as src:
        files = _run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                      "--exclude-standard"]).stdout.split("\0")
        for name in filter(None, files):
            if (repo / name).is_file():
                target = Path(src, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(repo / name, target)
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
              "--no-deps", "--no-index", "--find-links", str(deps), "--wheel-dir", str(dest), src],
             timeout=300, env=_pip_env())
    for wheel in deps.glob("*.whl"):
        shutil.copy2(wheel, dest)


def _dependency_wheels(requirements: list[str]) -> Path:
    def build(tmp: Path) -> None:
        proc = _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                     "--wheel-dir", str(tmp), *requirements], check=False, timeout=300,
                    env=_pip_env())
        if proc.returncode != 0:
            raise Unavailable(f"cannot get the wheels of {requirements}: {tail(proc.stderr, 8)}")

    return _cached("wheels", "\n".join(requirements), build)


def _pip_env() -> dict:
    env = dict(os.environ)
    env.pop("PIP_FIND_LINKS", None)  # only the index (or our cache) decides what goes in
    env.pop("PIP_REQUIRE_VIRTUALENV", None)
    return env
