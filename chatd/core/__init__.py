"""The core: who is connected, the rooms and their logs, and the threads that read and write.

It speaks events (``events.py``), never a protocol's text: a session's protocol object renders
them, and makes the session's reader, which turns its input into lines and acts on them
(``protocol.py``). Nothing here imports ``chatd.line``, ``chatd.net``, ``chatd.admin``,
``chatd.lifecycle`` or ``chatd.cluster`` (tests/unit/test_imports.py checks); the bus
interface (``bus.py``) is how the cluster plugs in.
"""
