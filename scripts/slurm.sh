#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the `slurm` tests and for trying sweeps by hand.
#   bash scripts/slurm.sh up     install (Debian packages, once), write configs, start the daemons; safe to re-run
#   bash scripts/slurm.sh down   stop every daemon this script started; leaves nothing running
#   bash scripts/slurm.sh status
# Needs root and apt (CI, a container). The node gets this host's real name, CPUs and memory, and two fake GPUs as
# GRES (device files /dev/null and /dev/zero) so that GPU layouts can be scheduled; accounting goes through slurmdbd
# and MariaDB because submitit and `pretrain-bench status` read finished jobs' states from sacct.
set -euo pipefail

ETC=/etc/slurm
RUN=/run/pretrain-bench-slurm          # pid files of the daemons started here
CLUSTER=pbench
PARTITION=debug
DB_PASS=pbench-slurmdbd                # a local, throw-away database

log() { echo "slurm.sh: $*" >&2; }

install() {
  local missing=()
  for cmd in slurmctld slurmd slurmdbd munged mariadbd sacct; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing slurm-wlm munge slurmdbd mariadb-server (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server mariadb-client >/dev/null
}

# Daemons that drop root write their pid file where their own user may.
pidfile() { case $1 in munged) echo /run/munge/munged.pid ;; mariadbd) echo /run/mysqld/mariadbd.pid ;;
                       *) echo "$RUN/$1.pid" ;; esac; }
alive() { [ -f "$(pidfile "$1")" ] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }

wait_for() {  # wait_for <what> <seconds> <command...>
  local what=$1 secs=$2; shift 2
  for _ in $(seq "$secs"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  log "$what did not come up within ${secs}s"; return 1
}

start_munge() {
  if alive munged; then
    munge -n >/dev/null 2>&1 && return
    kill "$(cat "$(pidfile munged)")"; sleep 1  # running but not answering (its socket was removed): restart
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
  chmod 400 /etc/munge/munge.key
  runuser -u munge -- munged --force --pid-file="$(pidfile munged)"
  wait_for munged 10 munge -n
}

start_mariadb() {
  if ! alive mariadbd; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock --skip-networking=0 \
      --bind-address=127.0.0.1 --pid-file="$(pidfile mariadbd)" >>"$RUN/mariadbd.log" 2>&1 &
    wait_for mariadbd 60 mariadb -e "select 1"
  fi
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

write_configs() {
  local host node
  host=$(hostname -s)
  # `slurmd -C` reports this machine's real sockets, cores, threads and memory in slurm.conf syntax.
  node=$(slurmd -C | head -1)
  mkdir -p "$ETC" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cat >"$ETC/slurm.conf" <<EOF
# Written by pretrain-bench scripts/slurm.sh for host $host.
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups in a container: follow a job's processes by parentage (it also finds torchrun's new sessions).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# Schedule every few seconds, not every minute: a requeued job (or one whose start time a test moves) starts soon.
SchedulerParameters=sched_interval=5,bf_interval=5
KillWait=10
MinJobAge=60
$node Gres=gpu:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  sed -i 's/ UpTime=[^ ]*//' "$ETC/slurm.conf"
  cat >"$ETC/gres.conf" <<EOF
NodeName=$host Name=gpu File=/dev/null
NodeName=$host Name=gpu File=/dev/zero
EOF
  cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$ETC/slurmdbd.conf"
}

node_ready() { sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'; }

up() {
  [ "$(id -u)" = 0 ] || { log "needs root (apt-get, daemons)"; exit 1; }
  mkdir -p "$RUN"
  install
  # Under systemd the packages start their own munge and MariaDB: stop them, so that this script owns (and `down`
  # stops) every daemon of the test cluster.
  if [ -d /run/systemd/system ]; then
    systemctl stop slurmd slurmctld slurmdbd mariadb munge >/dev/null 2>&1 || true
  fi
  write_configs
  start_munge
  start_mariadb
  alive slurmdbd || slurmdbd
  wait_for slurmdbd 30 sacctmgr -n list cluster
  sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
  if alive slurmctld; then scontrol reconfigure; else slurmctld; fi
  alive slurmd || slurmd
  wait_for "node $(hostname -s)" 60 node_ready
  scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
  log "up: $(sinfo -h -N -o '%N %c CPUs %m MB %G %T') (slurm $(sinfo -V | cut -d' ' -f2))"
}

down() {
  command -v scancel >/dev/null && alive slurmctld && scancel --quiet --full "--user=$(id -un)" 2>/dev/null || true
  for d in slurmd slurmctld slurmdbd mariadbd munged; do
    if alive "$d"; then
      local pid; pid=$(cat "$(pidfile "$d")")
      kill "$pid"
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$(pidfile "$d")"
  done
  log "down: no SLURM, database or munge daemon left running"
}

status() {
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    if alive "$d"; then echo "$d running (pid $(cat "$(pidfile "$d")"))"; else echo "$d stopped"; fi
  done
  alive slurmctld && sinfo -N -o '%N %c %m %G %T'
  return 0
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
