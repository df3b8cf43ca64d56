"""The network edge: listening sockets, accepting, admission (bans, limits), TLS, refusals.

A listener turns an accepted socket into a core ``Client`` and a ``Session`` thread.
"""
