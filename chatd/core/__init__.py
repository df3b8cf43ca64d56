"""The core: who is connected, the rooms and their logs, and the threads that read and write.

It speaks events (``events.py``), never a protocol's text: a session's protocol object renders
them. Nothing here imports ``chatd.line``, ``chatd.admin``, ``chatd.lifecycle`` or
``chatd.cluster``; the bus interface (``bus.py``) is how the cluster plugs in.
"""
