#!/bin/sh
# Installs tokenwarden as a systemd service on distributions without a .deb: the binary, the
# unit, the sysusers.d and tmpfiles.d files, and the example config (never over an existing
# one). Run as root from a source checkout after `cargo build --release`.
set -eu
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr}
[ -x target/release/tokenwarden ] || { echo "build first: cargo build --release" >&2; exit 1; }
install -D -m 0755 target/release/tokenwarden "$prefix/bin/tokenwarden"
install -D -m 0644 systemd/tokenwarden.service /etc/systemd/system/tokenwarden.service
if [ "$prefix" != /usr ]; then
    sed -i "s#/usr/bin/tokenwarden#$prefix/bin/tokenwarden#g" /etc/systemd/system/tokenwarden.service
fi
install -D -m 0644 systemd/tokenwarden.sysusers /usr/lib/sysusers.d/tokenwarden.conf
install -D -m 0644 systemd/tokenwarden.tmpfiles /usr/lib/tmpfiles.d/tokenwarden.conf
systemd-sysusers tokenwarden.conf
systemd-tmpfiles --create tokenwarden.conf
if [ ! -e /etc/tokenwarden/tokenwarden.toml ]; then
    install -m 0640 -g tokenwarden deploy/tokenwarden.toml /etc/tokenwarden/tokenwarden.toml
    echo "wrote /etc/tokenwarden/tokenwarden.toml: edit it, then run: tokenwarden --config /etc/tokenwarden/tokenwarden.toml config check"
else
    echo "kept the existing /etc/tokenwarden/tokenwarden.toml"
fi
systemctl daemon-reload
echo "then: systemctl enable --now tokenwarden"
