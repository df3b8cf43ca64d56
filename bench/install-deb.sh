#!/bin/sh
# Install a Debian package the benchmark runs itself (ngircd, redis-server), as root, without
# letting apt start (or enable at boot) its system service: the benchmark runs its own, in
# the foreground, on a free port, and stops it by pid. Does nothing when the command is
# already there; only warns when not root.
#   sh bench/install-deb.sh PACKAGE COMMAND "what happens without it"
set -u
package=$1 command=$2 without=$3
if command -v "$command" >/dev/null 2>&1 || [ -x "/usr/sbin/$command" ] || [ -x "/usr/bin/$command" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "bench: $package is not installed and we are not root; $without" >&2
    exit 0
fi
echo "bench: installing $package"
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    # "101: action not allowed": invoke-rc.d and deb-systemd-invoke then start no service
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "$package" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq "$package" >/dev/null; }
status=$?
[ -n "$made_policy" ] && rm -f "$policy"
if [ -d /run/systemd/system ]; then
    systemctl disable --now "$package" >/dev/null 2>&1 || true
fi
[ $status = 0 ] || echo "bench: warning: could not install $package; $without" >&2
exit 0
