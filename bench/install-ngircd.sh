#!/bin/sh
# Install Debian's ngircd for the benchmark, as root, without letting apt start (or enable at
# boot) a system ngircd: the benchmark runs its own, in the foreground, on a free port.
# Does nothing when ngircd is already there; only warns when not root.
set -u
if command -v ngircd >/dev/null 2>&1 || [ -x /usr/sbin/ngircd ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "bench: ngircd is not installed and we are not root; the benchmark will skip it" >&2
    exit 0
fi
echo "bench: installing ngircd"
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    # "101: action not allowed": invoke-rc.d and deb-systemd-invoke then start no service
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq ngircd >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq ngircd >/dev/null; }
status=$?
[ -n "$made_policy" ] && rm -f "$policy"
if [ -d /run/systemd/system ]; then
    systemctl disable --now ngircd >/dev/null 2>&1 || true
fi
[ $status = 0 ] || echo "bench: warning: could not install ngircd; the benchmark will skip it" >&2
exit 0
