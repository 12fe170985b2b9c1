#!/usr/bin/env bash
# Runs every tokenwarden test on a fresh machine: installs what the tests need (moto's AWS
# emulator, the aiosmtpd SMTP server, python-dotenv and PyNaCl, into .venv; Node's dotenv, into
# tests/support/node_modules; systemd-analyze, promtool and chromium if missing), then lints and runs the
# test suite.
# The tests start those servers themselves, on loopback, and stop them when they end.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=".venv"
# python-dotenv: one of the three real parsers the dotenv editor is checked against
# (src/target/dotenv_parsers.rs); moto's own dependencies need 1.2.2 or later.
# PyNaCl: the loopback GitHub receiver opens the sealed secrets with it (libsodium), an
# implementation independent of the target's.
want="moto[server]==5.2.5 aiosmtpd==1.4.6 prometheus-client==0.21.1 python-dotenv==1.2.4 pynacl==1.6.2"
stamp="$venv/.tokenwarden-deps"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing test servers into $venv: $want"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $want
    echo "$want" > "$stamp"
fi
export TOKENWARDEN_TEST_VENV="$PWD/$venv"

# Node's dotenv, the second real parser, pinned by tests/support/package-lock.json.
if ! command -v npm >/dev/null 2>&1; then
    echo "==> installing Node.js and npm (for Node's dotenv)"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; else sudo apt-get update -qq && sudo apt-get install -y -qq nodejs npm >/dev/null; fi
fi
node_want="$(node -p "require('./tests/support/package.json').dependencies.dotenv")"
node_have="$(node -p "try { require('./tests/support/node_modules/dotenv/package.json').version } catch (e) { '' }")"
if [ "$node_have" != "$node_want" ]; then
    echo "==> installing Node's dotenv into tests/support/node_modules"
    npm ci --prefix tests/support --no-audit --no-fund --silent
fi

# The unit-file tests need systemd-analyze (it works offline; systemd need not be running).
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "==> installing systemd (for systemd-analyze)"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq systemd >/dev/null; else sudo apt-get update -qq && sudo apt-get install -y -qq systemd >/dev/null; fi
fi

# The monitoring tests run promtool (`check rules`, `test rules`); Debian ships it in `prometheus`.
# Only the tool is wanted: no recommended exporters, and where systemd runs, the server the
# package enables (it would listen on every address) is stopped and disabled again.
if ! command -v promtool >/dev/null 2>&1; then
    echo "==> installing prometheus (for promtool)"
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if [ -d /run/systemd/system ]; then $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi

# The Alertmanager channel is tested against a real Alertmanager, started on loopback by the
# tests; Debian ships it in `prometheus-alertmanager`. As for promtool, the server the package
# enables is stopped and disabled again where systemd runs.
if ! command -v prometheus-alertmanager >/dev/null 2>&1; then
    echo "==> installing prometheus-alertmanager (for the Alertmanager channel tests)"
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null
    if [ -d /run/systemd/system ]; then $sudo systemctl disable --now prometheus-alertmanager >/dev/null 2>&1 || true; fi
fi

# The email rendering test opens every kind of email in headless Chromium (it reads local
# files only; no network).
if ! command -v chromium >/dev/null 2>&1; then
    echo "==> installing chromium (for the email rendering test)"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets --features failpoints -- -D warnings
echo "==> cargo test"
# `failpoints` compiles in the crash points the crash tests stop the process at.
cargo test --locked --all-targets --features failpoints
echo "==> package (.deb)"
bash tests/package.sh
