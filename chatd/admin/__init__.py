"""The operator's side: the admin socket (``server``), its wire protocol shared with chatctl
(``protocol``), the admin commands (``commands``), ``chatctl watch`` (``watch``) and the
Prometheus endpoint (``metrics``).

Kept import-light: chatctl imports ``chatd.admin.protocol`` and nothing else of chatd.
"""
