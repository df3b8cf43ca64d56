"""An upgrade's new image imports with the cyclic collector off (chatd/__init__.py), and every
start turns it back on with its own thresholds (lifecycle/startup.tune_process). Run in a
child interpreter: the environment variable must be there before chatd is imported."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = ("import gc, chatd; off = gc.isenabled()\n"
         "from chatd.lifecycle.startup import tune_process; tune_process()\n"
         "print(off, gc.isenabled(), gc.get_threshold()[0])")


def probe(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_UPGRADE")}
    return subprocess.run([sys.executable, "-c", PROBE], env={**environ, **env}, text=True,
                          capture_output=True, check=True, timeout=30).stdout.split()


def test_an_upgrades_new_image_imports_without_the_collector_and_launch_turns_it_on():
    assert probe(CHATD_UPGRADE_STATE="7") == ["False", "True", "20000"]


def test_any_other_start_keeps_the_collector_on():
    assert probe() == ["True", "True", "20000"]
