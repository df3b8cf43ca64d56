"""The process: composing the service and running its event loop (``service``), detaching
(``daemon``), systemd (``systemd``, ``fdstore``), periodic duties (``housekeeping``) and the
upgrades that hand every connection to a new chatd (``upgrade``, ``reexec``, ``handover``).
"""
