"""chatd: a threaded TCP chat daemon for netcat/telnet clients, administered with chatctl.

The version lives here (not only in pyproject.toml) so that `chatd --version` and the admin
`status` reply work from a source checkout without installed package metadata.
"""

__version__ = "0.1.0"
