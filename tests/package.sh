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
        ./usr/share/doc/tokenwarden/RUNBOOK.md ./usr/share/doc/tokenwarden/examples/iam-policy.json; do
    if ! grep -q " $want\$" <<<"$contents"; then echo "package: missing $want"; fail=1; fi
done
control=$(mktemp -d)
dpkg-deb -e "$deb" "$control"
grep -qx /etc/tokenwarden/tokenwarden.toml "$control/conffiles" || { echo "package: config is not a conffile"; fail=1; }
grep -q systemd-sysusers "$control/postinst" || { echo "package: postinst does not create the user"; fail=1; }
grep -q -- '-rwxr-xr-x 0/0 .* ./usr/bin/tokenwarden$' <<<"$contents" || { echo "package: binary mode"; fail=1; }
rm -rf "$control"
if [ "$fail" = 0 ]; then echo "package: 9 passed, 0 failed"; else exit 1; fi
