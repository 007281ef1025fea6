#!/usr/bin/env bash
# A typical test, one screen: devices up, a fault on some of them, watch, clear, down.
# Run from the checkout after the quick start (it puts .venv/bin first on PATH itself).
# PORT_BASE and API_PORT move it off 5020 and 9502 (tests/test_examples.py runs it so).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
api=(--api-port "${API_PORT:-9502}")

farm up --count 20 --port-base "${PORT_BASE:-5020}" "${api[@]}" &    # 1. up, in the background
for _ in $(seq 100); do farm status "${api[@]}" >/dev/null 2>&1 && break; sleep 0.2; done

farm fault add delay --ms 300 --fraction 0.25 --seed 1 --for 60s "${api[@]}"   # 2. a fault
farm servers --state faulted "${api[@]}"    # 3. watch: here, on http://127.0.0.1:9502/ or
farm status "${api[@]}"                     #    in Prometheus (farm prometheus-config)
farm fault clear --all "${api[@]}"          # 4. clear
farm down "${api[@]}"                       # 5. down: every port free when it returns
wait
