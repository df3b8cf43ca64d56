#!/bin/sh
# Install Debian's redis-server for the benchmark's chatd-cluster server kind, as root, without
# letting apt start (or enable at boot) a system Redis: the benchmark runs its own, on a free
# port with no persistence, and stops it by pid. Does nothing when redis-server is already
# there; only warns when not root (chatd-cluster is then skipped if selected).
set -u
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "bench: redis-server is not installed and we are not root; chatd-cluster will be skipped" >&2
    exit 0
fi
echo "bench: installing redis-server"
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    # "101: action not allowed": invoke-rc.d and deb-systemd-invoke then start no service
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq redis-server >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq redis-server >/dev/null; }
status=$?
[ -n "$made_policy" ] && rm -f "$policy"
if [ -d /run/systemd/system ]; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
[ $status = 0 ] || echo "bench: warning: could not install redis-server; chatd-cluster will be skipped" >&2
exit 0
