#!/usr/bin/env bash
# Builds the .deb with cargo-deb and checks what it installs. Called by tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --version 3.8.0
cargo deb --locked --output target/debian/tokenwarden.deb >/dev/null
deb=target/debian/tokenwarden.deb
contents=$(dpkg-deb -c "$deb")
fail=0
for want in ./usr/bin/tokenwarden ./etc/tokenwarden/tokenwarden.toml ./usr/lib/sysusers.d/tokenwarden.conf \
        ./usr/lib/tmpfiles.d/tokenwarden.conf ./usr/lib/systemd/system/tokenwarden.service \
        ./usr/share/doc/tokenwarden/RUNBOOK.md ./usr/share/doc/tokenwarden/examples/iam-policy.json \
        ./usr/share/doc/tokenwarden/examples/kubernetes-rbac.yaml; do
    if ! grep -q " $want\$" <<<"$contents"; then echo "package: missing $want"; fail=1; fi
done
control=$(mktemp -d)
dpkg-deb -e "$deb" "$control"
grep -qx /etc/tokenwarden/tokenwarden.toml "$control/conffiles" || { echo "package: config is not a conffile"; fail=1; }
grep -q systemd-sysusers "$control/postinst" || { echo "package: postinst does not create the user"; fail=1; }
grep -q -- '-rwxr-xr-x 0/0 .* ./usr/bin/tokenwarden$' <<<"$contents" || { echo "package: binary mode"; fail=1; }
rm -rf "$control"
checks=9
# On a Debian machine where this runs as root and tokenwarden is not installed (a fresh CI
# machine), install the package for real, check what an operator sees, keep an edited config
# over a reinstall, and purge it again.
if [ "$(id -u)" = 0 ] && ! dpkg -s tokenwarden >/dev/null 2>&1; then
    installed() { fail=1; echo "package install: $*"; }
    DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null || installed "dpkg -i failed"
    /usr/bin/tokenwarden --version >/dev/null || installed "the binary does not run"
    getent passwd tokenwarden >/dev/null || installed "no tokenwarden user"
    [ "$(stat -c %a:%G /etc/tokenwarden/tokenwarden.toml)" = 640:tokenwarden ] || installed "config mode/group"
    [ -d /var/lib/tokenwarden ] && [ "$(stat -c %a:%U /var/lib/tokenwarden)" = 700:tokenwarden ] || installed "state directory"
    systemd-analyze verify /usr/lib/systemd/system/tokenwarden.service 2>/dev/null || installed "systemd-analyze verify"
    exposure=$(systemd-analyze security --offline=true /usr/lib/systemd/system/tokenwarden.service 2>/dev/null | sed -n 's/.*Overall exposure level for tokenwarden.service: \([0-9.]*\).*/\1/p')
    awk -v e="${exposure:-99}" 'BEGIN { exit !(e <= 2.0) }' || installed "exposure ${exposure:-unknown} above 2.0"
    # The example config names secrets that a fresh machine does not have: exit 78, saying which.
    set +e; out=$(/usr/bin/tokenwarden --config /etc/tokenwarden/tokenwarden.toml config check 2>&1); code=$?; set -e
    [ "$code" = 78 ] && grep -q 'meta.app_secret' <<<"$out" || installed "config check on the example: exit $code: $out"
    echo "# edited by the operator" >> /etc/tokenwarden/tokenwarden.toml
    DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold "$deb" >/dev/null || installed "reinstall failed"
    grep -q '^# edited by the operator$' /etc/tokenwarden/tokenwarden.toml || installed "a reinstall overwrote the config"
    dpkg --purge tokenwarden >/dev/null || installed "purge failed"
    [ ! -e /usr/bin/tokenwarden ] || installed "purge left the binary"
    checks=$((checks + 11))
fi
if [ "$fail" = 0 ]; then echo "package: $checks passed, 0 failed"; else exit 1; fi
