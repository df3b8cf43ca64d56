"""The service's bind step (startup.py's first half), as a mixin of
:class:`~chatd.lifecycle.service.Service`: load the state files and bind, or take over, every
socket it listens on; no thread yet. What can fail here is what the operator must fix, and it
fails as one StartupError line (binding.py makes the sockets and words their errors).

It works on the service's own attributes (``config``, ``takeover``, the listeners, ``admin``,
``metrics``, ``protocols``) and asks it for the admin commands' view (``_admin_context``).
"""

from __future__ import annotations

import grp
import itertools
import socket

from chatd.admin.commands import AdminCommands
from chatd.admin.server import AdminServer
from chatd.lifecycle import binding, fdstore, parts
from chatd.lifecycle.fdstore import StoreTakeover
from chatd.lifecycle.startup import StartupError
from chatd.lifecycle.systemd import passed_fds
from chatd.lifecycle.takeover import Inherited
from chatd.net.listener import Listener


class Binding:
    """:meth:`bind` and the listeners it makes (Service's attributes)."""

    def bind(self) -> None:
        """Load bans, check the history and accounts files and bind (or take over) the
        sockets; no thread yet. Raises StartupError."""
        parts.load_state(self.bans, self.history_store, self.accounts)
        gid = grp.getgrnam(self.config.admin_group).gr_gid if self.config.admin_group else None
        self._activation, stored = fdstore.split(passed_fds())
        if stored and self.takeover is None:  # a restart under systemd: what the store kept
            self.takeover = StoreTakeover(stored, self._activation)
        if self.takeover is not None:
            self._bind_taken_over(gid)
            return
        self._bind_admin(gid)
        try:
            self.listener = self._listener(*binding.listening_socket(self._activation,
                                                                     self.config))
            self._bind_optional(None)
        except StartupError:
            self._let_go()
            raise

    def _bind_taken_over(self, gid) -> None:
        """The sockets of the process we take over from, or that systemd's fd store kept,
        instead of new ones (takeover.py)."""
        inherited = self.inherited = Inherited(self.takeover)
        self.started_at = inherited.started_at
        self.client_ids = itertools.count(inherited.next_client_id())
        admin = inherited.admin()
        if admin is None:  # the fd store keeps no admin socket: its directory is gone
            self._bind_admin(gid)
        else:
            self.admin = AdminServer(*admin, AdminCommands(self._admin_context()), gid)
        self.listener = self._listener(*inherited.listener())
        self._bind_optional(inherited)

    def _bind_optional(self, inherited: Inherited | None) -> None:
        """The TLS listener, the IRC listeners and the metrics endpoint, if configured: handed
        over, else new."""
        config = self.config
        tls_sock, metrics_sock, irc_sock, irc_tls_sock = (
            (inherited.socket("tls_listener", bool(config.tls_cert)),
             inherited.socket("metrics", bool(config.metrics_port)),
             inherited.socket("irc_listener", bool(config.irc_port)),
             inherited.socket("irc_tls_listener", bool(config.irc_tls_port)))
            if inherited is not None else (None, None, None, None))
        context = binding.tls_context(config) if config.tls_cert else None
        if config.tls_cert:
            self.tls_listener = self._listener(tls_sock or binding.tls_socket(config),
                                               tls_context=context)
        irc = self.protocols["irc"]
        if config.irc_port:
            self.irc_listener = self._listener(
                irc_sock or binding.irc_socket(config.host, config.irc_port, ""), protocol=irc)
        if config.irc_tls_port:
            self.irc_tls_listener = self._listener(
                irc_tls_sock or binding.irc_socket(config.host, config.irc_tls_port, " TLS"),
                tls_context=context, protocol=irc)
        if self.tls_listener is not None and self.accounts is not None:
            self.accounts.tls_port = self.tls_listener.address[1]  # what refusals name
        if config.metrics_port:
            self.metrics = parts.metrics_server(metrics_sock or binding.metrics_socket(config),
                                               self.hub, self.admin, self.bus, self.bans,
                                               config=lambda: self.config,
                                               started_at=lambda: self.started_at,
                                               accounts=self.accounts)

    def _listener(self, sock: socket.socket, passed: bool = False, tls_context=None,
                  protocol=None) -> Listener:
        """``protocol``: what a connection speaks (Listener); the line protocol by default."""
        extra = {"protocol": protocol} if protocol is not None else {}
        return Listener(sock, self.hub, self.flusher, self.bans, self.settings, self.client_ids,
                        tls_context, passed=passed, **extra)

    def _bind_admin(self, gid) -> None:
        admin_sock, admin_path, inode = binding.admin_socket(self.config, gid)
        commands = AdminCommands(self._admin_context())
        self.bus.on_command(commands.carry_out)  # what another node's admin asks of ours
        self.admin = AdminServer(admin_sock, admin_path, inode, commands, gid)
