"""The suite's root: fixtures from tests/support load for every folder (unit, live, e2e), and
the settings every run shares (hypothesis profile, markers, a private state directory)."""

from __future__ import annotations

import os
import tempfile

from hypothesis import settings

pytest_plugins = [
    "support.daemon",  # chatd, server, pair, trio
    "support.inproc",  # make_world, world
    "support.redisfix",  # redis_server
    "support.proxy",  # tcp_proxy
    "support.cluster",  # cluster
    "support.service",  # subreaper, daemon_paths
    "support.watch",  # watching
    "support.disk",  # tmpfs
    "support.figures",  # book
]

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
