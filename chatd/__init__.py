"""chatd: a threaded TCP chat daemon for netcat/telnet clients, administered with chatctl.

The version lives here (not only in pyproject.toml) so that `chatd --version` and the admin
`status` reply work from a source checkout without installed package metadata.
"""

import gc as _gc
import os as _os

__version__ = "0.1.0"

# The new image of an upgrade in place (lifecycle/reexec.py) imports everything and reads the
# state with the cyclic collector off: nothing it builds before launch is garbage, and every
# client waits for it (about 10 ms of the gap with 5,000 clients). startup.tune_process turns
# the collector back on, as every start does.
if _os.environ.get("CHATD_UPGRADE_STATE"):
    _gc.disable()
