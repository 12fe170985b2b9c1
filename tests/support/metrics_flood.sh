#!/bin/sh
# metrics_flood.sh BINARY: `docs/reliability.md`'s /metrics flood figure. Starts BINARY's Graph
# sandbox, then the daemon under `ulimit -n 128` with /metrics on loopback; opens 300 idle
# connections to /metrics, revokes the token in the sandbox, and prints whether the daemon
# recorded the dead token and queued its email within 15 s. Needs curl, bc and python3.
set -u
BIN=$1; SB=http://127.0.0.1:18791; D=$(mktemp -d); P=18792
$BIN sandbox --listen 127.0.0.1:18791 >/dev/null 2>&1 & SANDBOX=$!
sleep 1
TOKEN=$(curl -s -X POST $SB/_sandbox/tokens  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
[ -n "$TOKEN" ] || { kill $SANDBOX; exit 1; }
printf a3f1c0de5b7e4d2c9f8a6b4c2d0e1f37 > $D/app-secret; chmod 600 $D/app-secret
cat > $D/tw.toml <<T
state_dir = "$D/state"
[meta]
app_id = "634974688087057"
app_secret = { file = "$D/app-secret" }
base_url = "$SB"
attempts = 1
timeout = "2s"
[schedule]
cron = "* * * * * *"
[email]
kind = "folder"
path = "$D/mail"
from = "tw@example.com"
to = ["oncall@example.com"]
[metrics]
listen = "127.0.0.1:$P"
[[token]]
name = "prod"
phone_number_id = "106540352242922"
T
chmod 600 $D/tw.toml
mkdir -p $D/state; chmod 700 $D/state
echo "$TOKEN" | $BIN --config $D/tw.toml import --token prod >/dev/null
sh -c "ulimit -n 128 && exec $BIN --config $D/tw.toml run" 2>$D/log & PID=$!
sleep 2
python3 - $P <<'PY' &
import socket, sys, time
socks = []
for i in range(300):
    s = socket.socket(); s.setblocking(False)
    try: s.connect(("127.0.0.1", int(sys.argv[1])))
    except BlockingIOError: pass
    socks.append(s)
time.sleep(25)
PY
FLOOD=$!
sleep 2
echo "descriptors open in the daemon during the flood: $(ls /proc/$PID/fd | wc -l)"
curl -s -X POST $SB/_sandbox/invalidate -d "{\"token\":\"$TOKEN\"}" >/dev/null
T0=$(date +%s.%N)
for i in $(seq 1 75); do
  if grep -q '"invalid"' $D/state/state.json 2>/dev/null && [ -n "$(ls $D/mail 2>/dev/null)" ]; then
    echo "dead token recorded and email queued after $(echo "$(date +%s.%N) - $T0" | bc) s"; break; fi
  sleep 0.2
done
[ $i -eq 75 ] && echo "dead token NOT recorded / email NOT queued within 15 s"
echo "\"Too many open files\" in the log: $(grep -c 'Too many open files' $D/log)"
kill $PID; wait $PID; kill $FLOOD $SANDBOX 2>/dev/null
rm -rf $D
