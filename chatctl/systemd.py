"""What chatctl asks of systemd: whether a unit is being restarted (``chatctl systemd-stop``),
and to restart it (``chatctl upgrade`` under systemd).

systemd sends the same SIGTERM for ``systemctl stop`` and ``systemctl restart``; only the job
under way tells them apart. ExecStop= runs while that job is still a ``restart`` (it becomes
a ``start`` once the stop is done), so chatctl, run there as root (``+``), reads it with
``systemctl list-jobs``. The parsing is pure (:func:`job_type`); the rest is the I/O.
"""

from __future__ import annotations

import subprocess

#: Jobs whose stop is followed by a start of the same unit.
RESTART_JOBS = frozenset({"restart", "try-restart"})
SYSTEMCTL_SECONDS = 5.0


def job_type(listing: str, unit: str) -> str | None:
    """The type of ``unit``'s job in ``systemctl list-jobs --no-legend --plain`` output
    (``ID UNIT TYPE STATE`` per line), or None if it has none."""
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == unit:
            return fields[2]
    return None


def restart(unit: str, timeout: float) -> str | None:
    """``systemctl restart UNIT``; None when done, else why not (one line)."""
    try:
        proc = subprocess.run(["systemctl", "restart", unit], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"systemctl restart {unit} did not finish within {timeout:g} s"
    except OSError as exc:
        return f"cannot run systemctl: {exc.strerror or exc}"
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return lines[-1] if lines else f"systemctl restart {unit} exited with status {proc.returncode}"
    return None


def restarting(unit: str) -> bool:
    """Is systemd restarting ``unit`` right now? False if systemctl cannot say."""
    try:
        proc = subprocess.run(["systemctl", "list-jobs", "--no-legend", "--plain", "--no-pager",
                               unit], capture_output=True, text=True, timeout=SYSTEMCTL_SECONDS)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and job_type(proc.stdout, unit) in RESTART_JOBS
