#!/usr/bin/env bash
# Stop the private SLURM cluster that start-slurm.sh started in DIR (by its pid files).
set -uo pipefail
DIR=${1:?usage: stop-slurm.sh DIR}
for name in slurmd slurmctld munged; do
  pidfile="$DIR/run/$name.pid"
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || continue
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
done
exit 0
