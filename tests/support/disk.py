"""Disks that fill up or turn read-only (``tmpfs``, root only) and a chatd that logs to a file
on one (:class:`FileLoggedChatd`: the ``chatd`` fixture reads its events from stderr instead)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from support.client import ChatClient
from support.faults import ROOT
from support.paths import REPO
from support.waiting import wait_until


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
