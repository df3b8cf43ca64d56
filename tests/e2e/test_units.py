"""Lint of the shipped systemd units: ``systemd-analyze verify`` and ``security``.

``verify`` reports most problems (unknown keys, bad values, relative paths) as warnings with
exit status 0, so a test must fail on *any* output, not only on the status. It also checks that
``ExecStart=``/``ExecReload=`` exist, and /opt/chatd is not installed on a development machine
or in CI. So the units are checked with ``--root`` against a staged tree: the shipped files
byte for byte in ``etc/systemd/system``, this venv's real ``chatd`` and ``chatctl`` entry points
at ``/opt/chatd/bin``, and a copy of the host's own unit directory (for ``sysinit.target`` and
the other default dependencies that verify loads). Rewriting the paths in a copy of the units
would check a file we do not ship. The end-to-end test (test_systemd_e2e.py) verifies the units
again against a real install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import REPO

UNITS = ("chatd.service", "chatd.socket")
MAX_EXPOSURE = 2.5
HOST_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze not installed (Debian: apt install systemd)")


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The staged tree described in the module docstring."""
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in UNITS:
        shutil.copyfile(REPO / "systemd" / unit, units / unit)
    bindir = tmp_path / "opt/chatd/bin"
    bindir.mkdir(parents=True)
    for tool in ("chatd", "chatctl"):
        real = Path(sys.executable).parent / tool
        if not real.exists():
            pytest.fail(f"{real} missing: install chatd into this venv (make test does)")
        shutil.copy2(real, bindir / tool)
    if Path("/lib").is_symlink():  # merged /usr: keep absolute /lib/... symlinks resolvable
        (tmp_path / "lib").symlink_to(os.readlink("/lib"))
    for host_dir in HOST_UNIT_DIRS:
        target = tmp_path / host_dir.lstrip("/")
        if Path(host_dir).is_dir() and not target.exists():
            shutil.copytree(host_dir, target, symlinks=True)
    return tmp_path


def verify(root: Path) -> subprocess.CompletedProcess:
    paths = [str(root / "etc/systemd/system" / unit) for unit in UNITS]
    return analyze("verify", "--man=no", f"--root={root}", *paths)


def exposure(root: Path, unit: str = "chatd.service") -> tuple[float, str]:
    proc = analyze("security", "--offline=yes", f"--root={root}",
                   f"--threshold={int(MAX_EXPOSURE * 10)}", "--no-pager", unit)
    m = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", proc.stdout)
    assert m, f"no exposure level in:\n{proc.stdout}{proc.stderr}"
    assert proc.returncode == 0, f"above --threshold:\n{proc.stdout}{proc.stderr}"
    return float(m.group(1)), proc.stdout


def test_verify_prints_nothing(root: Path):
    proc = verify(root)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_verify_catches_what_we_rely_on_it_for(root: Path):
    """The empty output above means something: the same run reports a missing ExecReload=
    binary and an unknown key (the latter with exit status 0)."""
    (root / "opt/chatd/bin/chatctl").unlink()
    proc = verify(root)
    assert "/opt/chatd/bin/chatctl is not executable" in proc.stderr, proc.stderr
    shutil.copy2(Path(sys.executable).parent / "chatctl", root / "opt/chatd/bin/chatctl")
    service = root / "etc/systemd/system/chatd.service"
    service.write_text(service.read_text().replace("DynamicUser=", "DynamicUsr="))
    proc = verify(root)
    assert "Unknown key 'DynamicUsr'" in proc.stderr, proc.stderr
    assert proc.returncode == 0  # hence: fail on output


def test_security_exposure_at_most_2_5(root: Path):
    level, report = exposure(root)
    print(report)
    assert level <= MAX_EXPOSURE, report


def test_admin_group_dropin_from_readme_stays_clean(root: Path):
    """systemd/README.md's admin_group drop-in (which the e2e test runs for real) loosens the
    sandbox a little; the result still verifies cleanly and stays within the threshold."""
    readme = (REPO / "systemd" / "README.md").read_text()
    m = re.search(r"<!-- admin-group-dropin -->\n```ini\n(.*?)```", readme, re.S)
    assert m, "systemd/README.md lost its admin_group drop-in block"
    dropin = root / "etc/systemd/system/chatd.service.d/admin-group.conf"
    dropin.parent.mkdir()
    dropin.write_text(m.group(1))
    proc = verify(root)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    level, report = exposure(root)
    print(f"exposure with the admin_group drop-in: {level}")
    assert level <= MAX_EXPOSURE, report
    assert "PrivateUsers=" in report and "✗ PrivateUsers=" in report, "drop-in not applied"

