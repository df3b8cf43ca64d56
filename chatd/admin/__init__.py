"""The operator's side: the admin socket's file and credentials (``endpoint``), its server
(``server``) and one connection's requests (``conversation``), the wire protocol shared with
chatctl (``protocol``), the command table (``commands``) and its handlers (``queries``,
``actions``, ``control``, ``watch``), and the Prometheus endpoint (``metrics``).

Kept import-light: chatctl imports ``chatd.admin.protocol`` and nothing else of chatd.
"""
