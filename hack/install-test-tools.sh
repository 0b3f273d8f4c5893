#!/usr/bin/env bash
# Installs, from Debian's packages and only when missing, what the console's e2e tests drive:
#   - chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): the headless
#     browser of tests/console/test_browser.py, driven through Selenium with this very
#     chromedriver (nothing is downloaded at run time);
#   - prometheus (/usr/bin/prometheus): tests/console/test_prometheus.py runs the binary
#     itself on a loopback port; the package's system service is not started (a policy-rc.d
#     refuses it during the install, and nothing here enables it).
# Idempotent: a no-op once the files are there. Needs root to install.
set -euo pipefail

# Debian package -> a file it installs.
declare -A debs=(
    [chromium]=/usr/bin/chromium
    [chromium-driver]=/usr/bin/chromedriver
    [prometheus]=/usr/bin/prometheus
)
want=()
for pkg in "${!debs[@]}"; do
    [[ -e "${debs[$pkg]}" ]] || want+=("$pkg")
done
if (( ${#want[@]} == 0 )); then
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "install-test-tools: missing Debian packages ${want[*]}; install them as root" >&2
    exit 1
fi
echo "install-test-tools: installing ${want[*]} from Debian's packages" >&2
# Keep the prometheus package's service from starting (exit 101: action forbidden), unless
# the machine has a policy of its own.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
# Nor at the next boot, on a machine run by systemd.
if [[ " ${want[*]} " == *" prometheus "* ]] && [[ -d /run/systemd/system ]]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
