"""Preflight: the checks of a configuration that need the world outside the TOML file (files,
DNS), so that a config which cannot start is refused as a config error, naming its key.

`load()` stays pure (it reads only the TOML file): reload, tests and --check-config build
Config values freely. These checks are separate, and run by:

- `chatd --check-config` and `chatd` itself (cli.py) before starting: :func:`check`, all of them,
  so both refuse a bad config with the same line and exit 2 (not 1, later, half-started);
- a reload (`reload()`, load.py): :func:`check_reload`, only for the keys a reload applies, i.e.
  the TLS files (a renewed certificate is loaded then); a reload that fails keeps the old config.

Nothing here binds a socket, so an address in use or a privileged port are still found at
bind time (exit 1). Runs in the main thread (start-up) or the service thread (reload).
"""

from __future__ import annotations

import os
import socket
import ssl
import stat

from chatd.config.errors import ConfigError
from chatd.config.model import Config

__all__ = ["TransientError", "check", "check_reload"]


class TransientError(ConfigError):
    """A check that cannot be made right now (the resolver is failing temporarily). `chatd`
    exits 1 for it, not 2: the unit's RestartPreventExitStatus=2 means "do not retry", which a
    DNS server still starting at boot does not deserve. `--check-config` still exits 2."""


def check(config: Config) -> None:
    """Every preflight check, first failure raised as ConfigError (TransientError for DNS
    failing temporarily)."""
    _check_host(config)
    _check_metrics_host(config)
    _check_tls(config)
    _check_cluster(config)


def check_reload(config: Config) -> None:
    """The checks for what a reload applies: the TLS certificate and key."""
    _check_tls(config)


def _socket_activated() -> bool:
    # As systemd.passed_fds() decides, without taking the variables away from it.
    count = os.environ.get("LISTEN_FDS", "")
    return count.isascii() and count.isdigit() and os.environ.get("LISTEN_PID") == str(os.getpid())


def _check_host(config: Config) -> None:
    """`host` resolves the way server.bind() will resolve it (passive, stream)."""
    if _socket_activated() and config.tls_cert is None:
        return  # systemd passes the listener: host names nothing chatd binds
    _resolve("server.host", config.host, config.port)


def _check_metrics_host(config: Config) -> None:
    """`metrics_host` resolves, when the metrics endpoint is on (metrics.py binds it as
    server.bind() binds the chat port)."""
    if not config.metrics_port:
        return
    _resolve("metrics.metrics_host", config.metrics_host, config.metrics_port)


def _resolve(key: str, host: str, port: int) -> None:
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        error = TransientError if exc.errno == socket.EAI_AGAIN else ConfigError
        raise error(key, f"cannot resolve {host!r} ({exc.strerror})") from None
    except UnicodeError:  # the IDNA codec refuses it ("a..b", a label over 63 characters)
        raise ConfigError(key, f"cannot resolve {host!r} (not a valid host name)") from None


def _check_cluster(config: Config) -> None:
    """Cluster mode: a Redis that not every local user can write to (docs/security.md:
    whoever writes to Redis could deny service), and the secret that seals what is in it."""
    if not config.redis_url:
        return
    # Imported only in cluster mode: the cluster package loads its whole bus.
    from chatd.cluster import secret

    url = config.redis_url
    if not config.allow_unauthenticated_redis and not secret.has_credentials(url):
        if url.startswith("unix://"):
            problem = secret.unix_socket_problem(url)
            if problem:
                raise ConfigError("cluster.redis_url", f"{problem}: any local user could write "
                                  "to Redis (put the socket in a 0700 directory, or give Redis "
                                  "a password: redis://USER:PASSWORD@..., or set "
                                  "allow_unauthenticated_redis = true)")
        else:
            raise ConfigError("cluster.redis_url", f"{secret.redact(url)} has no credentials: "
                              "anyone who can reach that port could write to Redis (use "
                              "redis://USER:PASSWORD@HOST:PORT/DB with requirepass or an ACL "
                              "user, or unix:///path in a 0700 directory, or set "
                              "allow_unauthenticated_redis = true)")
    try:
        secret.read_secret(config.cluster_secret_file)
    except secret.SecretError as exc:
        raise ConfigError("cluster.cluster_secret_file", str(exc)) from None


def _check_tls(config: Config) -> None:
    if config.tls_cert is None or config.tls_key is None:
        return  # TLS off (load() already refused one without the other)
    _check_readable("tls.tls_cert", config.tls_cert)
    _check_readable("tls.tls_key", config.tls_key)
    _check_pem(config.tls_cert, config.tls_key)


def _check_readable(key: str, path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ConfigError(key, f"no such file {path}") from None
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise ConfigError(key, f"is a directory: {path}")
    if not stat.S_ISREG(mode):  # a FIFO would hang the open below
        raise ConfigError(key, f"not a regular file: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None


class _Encrypted(Exception):
    """Raised by the passphrase callback: OpenSSL asks for one only for an encrypted key."""


def _no_passphrase() -> bytes:
    raise _Encrypted


def _check_pem(cert: str, key: str) -> None:
    """Load the pair as the TLS listener will; a mismatch or a file that is not PEM is a
    config error here rather than a failed start (or a passphrase prompt) later."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _Encrypted:
        raise ConfigError("tls.tls_key", f"{key} is encrypted; chatd cannot ask for a passphrase "
                                         "(store the key decrypted, readable only by chatd)") from None
    except ssl.SSLError as exc:
        raise _pem_error(exc, cert, key) from None
    except OSError as exc:  # the file went away since the stat above
        raise ConfigError("tls.tls_cert", f"cannot read {exc.filename or cert}: {exc.strerror or exc}") from None


def _pem_error(exc: ssl.SSLError, cert: str, key: str) -> ConfigError:
    """The error naming the file at fault: OpenSSL says only "PEM lib" for either."""
    if exc.reason == "KEY_VALUES_MISMATCH":
        return ConfigError("tls.tls_key", f"{key} does not match the certificate in {cert}")
    if not _has_certificate(cert):
        return ConfigError("tls.tls_cert", f"no PEM certificate in {cert}")
    return ConfigError("tls.tls_key", f"no PEM private key in {key}")


def _has_certificate(path: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        return False
    return True
