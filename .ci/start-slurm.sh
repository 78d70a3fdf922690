#!/usr/bin/env bash
# Start a private one-node SLURM cluster on this machine for tests/test_cluster.py (CI).
#
#   .ci/start-slurm.sh DIR        # prints `export ...` lines for the caller to eval
#   .ci/stop-slurm.sh DIR         # stops what this started, by pid
#
# Everything lives under DIR: its own munge key and socket, slurm.conf, state, spool, logs
# and pid files; /etc/slurm and /etc/munge are not touched. The daemons talk over
# 127.0.0.1 only (NodeAddr, SlurmctldHost address and CommunicationParameters=NoInAddrAny).
# Installs slurm-wlm and munge with apt-get when they are missing (root, Debian/Ubuntu).
# Fails loudly (non-zero exit, reason on stderr) rather than leaving a half-started cluster.
set -euo pipefail

DIR=${1:?usage: start-slurm.sh DIR}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
log() { echo "start-slurm: $*" >&2; }
die() { log "error: $*"; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
  command -v apt-get >/dev/null || die "slurm-wlm/munge are not installed and apt-get is unavailable"
  [ "$(id -u)" = 0 ] || die "slurm-wlm/munge are not installed and installing them needs root"
  log "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  timeout 180 apt-get update -qq || die "apt-get update failed"
  timeout 240 apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
    || die "apt-get install slurm-wlm munge failed"
fi

mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
chmod 700 "$DIR/munge"

# --- munge: a private daemon with its own key and socket --------------------------------
if [ ! -s "$DIR/munge/munge.key" ]; then
  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$DIR/munge/munge.key"
fi
MUNGE_SOCKET="$DIR/munge/munge.sock"
munged --force --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
  --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
  || die "munged did not start (see $DIR/log/munged.log)"
echo probe | munge --socket="$MUNGE_SOCKET" | unmunge --socket="$MUNGE_SOCKET" >/dev/null \
  || die "munge round trip failed (see $DIR/log/munged.log)"

# --- slurm.conf: one node (this machine, addressed as 127.0.0.1), one partition ----------
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
CPUS=$(nproc)
CTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
cat > "$DIR/slurm.conf" <<CONF
# Written by .ci/start-slurm.sh: a private one-node cluster on 127.0.0.1.
ClusterName=relcore-ci
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=60 State=UP
CONF
export SLURM_CONF="$DIR/slurm.conf"

slurmctld -f "$SLURM_CONF" -i || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
slurmd -f "$SLURM_CONF" -N localhost || die "slurmd did not start (see $DIR/log/slurmd.log)"

for _ in $(seq 1 60); do
  state=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
  case "$state" in idle*|mix*|alloc*) break ;; esac
  sleep 1
done
case "${state:-}" in
  idle*|mix*|alloc*) ;;
  *) tail -5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
     die "node never became idle (state '${state:-none}')" ;;
esac
log "SLURM up: node localhost ($CPUS CPUs) on 127.0.0.1:$CTLD_PORT, conf $SLURM_CONF"
echo "export SLURM_CONF=$SLURM_CONF"
