#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, built from Debian's packages (slurm 22.05 on Debian 12),
# for CI and for trying the SLURM launcher on a laptop. No systemd and no cgroups needed: every
# daemon (munged, a private MariaDB, slurmdbd, slurmctld, slurmd) is started directly, with all of
# its config, sockets, logs and state under one state directory.
#
#   slurm/local_cluster.sh install   apt-get the packages (idempotent)
#   slurm/local_cluster.sh start     write configs, start the daemons, wait for the node to be idle,
#                                    print the export lines (re-runnable)
#   slurm/local_cluster.sh stop      cancel jobs, stop every daemon it started
#   slurm/local_cluster.sh restart   stop, then start
#   slurm/local_cluster.sh status    daemons, sinfo, squeue
#   slurm/local_cluster.sh env       print the export lines:  eval "$(slurm/local_cluster.sh env)"
#   slurm/local_cluster.sh logs      tail the daemon logs
#   slurm/local_cluster.sh purge     stop, then delete the state directory
#
# Environment (all optional):
#   ONELORA_SLURM_STATE          state dir (default: slurm/.state next to this script)
#   ONELORA_SLURM_CPUS           CPUs of the node (default: nproc)
#   ONELORA_SLURM_MEM_MB         RealMemory of the node in MB (default: MemTotal, less 5%, capped by a cgroup limit)
#   ONELORA_SLURM_PORT           slurmctld port; slurmd uses +1, slurmdbd +2 (default 6817)
#   ONELORA_SLURM_TIMEOUT        seconds each wait loop may take (default 60)
#   ONELORA_SLURM_SUBMIT_USER    extra user to register in the accounting DB (default: $SUDO_USER)
#
# Must run as root (slurmd starts jobs as the submitting user). See slurm/README.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=$(realpath -m "${ONELORA_SLURM_STATE:-$SCRIPT_DIR/.state}")
ETC=$STATE/etc
LOG=$STATE/log
SPOOL=$STATE/spool
SLURM_CONF_FILE=$ETC/slurm.conf
DBD_CONF_FILE=$ETC/slurmdbd.conf

# Unix sockets are limited to 108 bytes: with a deep state dir, put them under /tmp instead.
if (( ${#STATE} <= 70 )); then
  RUN=$STATE/run
else
  RUN=/tmp/onelora-slurm-$(printf '%s' "$STATE" | md5sum | cut -c1-10)
fi
MUNGE_SOCKET=$RUN/munge.socket
MYSQL_SOCKET=$RUN/mysqld.sock

CLUSTER=onelora
ACCOUNT=onelora
PARTITION=debug
NODE=localhost
CTLD_PORT=${ONELORA_SLURM_PORT:-6817}
SLURMD_PORT=$((CTLD_PORT + 1))
DBD_PORT=$((CTLD_PORT + 2))
TIMEOUT=${ONELORA_SLURM_TIMEOUT:-60}
PACKAGES=(munge mariadb-server slurmdbd slurmctld slurmd slurm-client)

# binary name (as in /proc/PID/exe) and pid file of each daemon, in start order
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
declare -A EXE=([munged]=munged [mariadbd]=mariadbd [slurmdbd]=slurmdbd [slurmctld]=slurmctld [slurmd]=slurmd)
declare -A PIDFILE=(
  [munged]=$RUN/munged.pid [mariadbd]=$RUN/mariadbd.pid [slurmdbd]=$RUN/slurmdbd.pid
  [slurmctld]=$RUN/slurmctld.pid [slurmd]=$RUN/slurmd.pid
)

# ------------------------------------------------------------------------------------ helpers
say() { printf '[local_cluster +%ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf '[local_cluster] ERROR: %s\n' "$*" >&2; exit 1; }

need_root() {
  [[ $(id -u) == 0 ]] || die "must run as root (slurmd launches jobs as the submitting user); try: sudo $0 $*"
}

need_packages() {
  local missing=() b
  for b in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacctmgr; do
    command -v "$b" >/dev/null 2>&1 || [[ -x /usr/sbin/$b ]] || missing+=("$b")
  done
  ((${#missing[@]} == 0)) || die "missing ${missing[*]}; run: $0 install"
}

# Print the tail of every daemon log (used on failure).
show_logs() {
  local n=${1:-40} f
  for f in "$LOG"/*.log; do
    [[ -s $f ]] || continue
    printf '\n===== %s (last %s lines) =====\n' "$f" "$n" >&2
    tail -n "$n" "$f" >&2
  done
}

fail() {
  printf '[local_cluster] ERROR: %s\n' "$*" >&2
  show_logs 40
  printf '\n[local_cluster] start failed; daemons still up: %s\n' "$(running_list)" >&2
  printf '[local_cluster] fix the cause, then "%s stop && %s start" (or "%s purge" for a clean slate)\n' "$0" "$0" "$0" >&2
  exit 1
}

# PID of a running daemon from its pid file in the state dir, or fail. The pid must still belong
# to the expected binary (pid files can be stale after a crash or reboot, and pids get reused).
daemon_pid() {
  local name=$1 pid exe
  [[ -r ${PIDFILE[$name]} ]] || return 1
  pid=$(tr -dc '0-9' <"${PIDFILE[$name]}")
  [[ -n $pid && -d /proc/$pid ]] || return 1
  if exe=$(readlink "/proc/$pid/exe" 2>/dev/null); then
    [[ $exe == "$(daemon_exe "$name")" ]] || return 1
  else
    # not root: another user's exe is unreadable, its comm is not
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${EXE[$name]}" ]] || return 1
  fi
  echo "$pid"
}

# The real binary of a daemon: Debian installs slurmctld/slurmd as alternatives (slurmctld-wlm).
daemon_exe() {
  local b
  b=$(command -v "${EXE[$1]}" 2>/dev/null || echo "/usr/sbin/${EXE[$1]}")
  readlink -f "$b"
}

running_list() {
  local d out=()
  for d in "${DAEMONS[@]}"; do daemon_pid "$d" >/dev/null && out+=("$d"); done
  echo "${out[*]:-none}"
}

# wait_for DAEMON DESCRIPTION COMMAND...: poll COMMAND every 0.5 s until it succeeds; fail after
# TIMEOUT seconds, or as soon as DAEMON (a name from DAEMONS, or pid:N) has died.
wait_for() {
  local daemon=$1 what=$2; shift 2
  local t0=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if [[ $daemon == pid:* ]]; then
      alive "${daemon#pid:}" || fail "${EXE[mariadbd]} exited while waiting for $what"
    elif ((SECONDS - t0 >= 3)) && ! daemon_pid "$daemon" >/dev/null; then
      # (3 s of grace: a daemon writes its pid file only after it has forked)
      fail "$daemon exited while waiting for $what"
    fi
    ((SECONDS - t0 < TIMEOUT)) || fail "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.5
  done
}

export_lines() {
  printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_FILE"
}

slurm_env() { SLURM_CONF=$SLURM_CONF_FILE "$@"; }

# ------------------------------------------------------------------------------------ install
cmd_install() {
  need_root install
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    say "packages already installed: ${PACKAGES[*]}"
    return 0
  fi
  say "installing: ${missing[*]}"
  # Keep apt from starting the system-wide services (munge, mariadb, slurm*): a policy-rc.d that
  # denies starts, only for the duration of the install and only if there is none already.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [[ ! -e $policy ]]; then
    # shellcheck disable=SC2064  # (expand now: $policy is local)
    trap "rm -f '$policy'" EXIT
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
  fi
  local aptlog
  aptlog=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$aptlog" 2>&1; then
    tail -n 40 "$aptlog" >&2
    die "apt-get failed (full log: $aptlog)"
  fi
  rm -f "$aptlog"
  if ((added_policy)); then rm -f "$policy"; trap - EXIT; fi
  say "installed: $(dpkg-query -W -f='${Package} ${Version}\n' slurmctld munge mariadb-server | tr '\n' ' ')"
}

# ------------------------------------------------------------------------------------ configs
node_cpus() { echo "${ONELORA_SLURM_CPUS:-$(nproc)}"; }

node_mem_mb() {
  if [[ -n ${ONELORA_SLURM_MEM_MB:-} ]]; then echo "$ONELORA_SLURM_MEM_MB"; return; fi
  local mem lim
  mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
  for lim in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
    if [[ -r $lim ]] && [[ $(cat "$lim") =~ ^[0-9]+$ ]]; then
      local l=$(($(cat "$lim") / 1048576))
      ((l < mem)) && mem=$l
    fi
  done
  echo $((mem * 95 / 100))
}

# Write FILE from stdin only if the content changed; return 0 if it changed.
write_if_changed() {
  local file=$1 mode=$2 tmp
  tmp=$(mktemp "$file.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    return 1
  fi
  mv -f "$tmp" "$file"
  return 0
}

write_configs() {
  mkdir -p "$ETC" "$LOG" "$RUN" "$SPOOL/slurmctld" "$SPOOL/slurmd" "$STATE/munge" "$STATE/mysql"
  chmod 755 "$STATE" "$ETC" "$LOG" "$RUN" "$SPOOL"
  chmod 700 "$STATE/munge"
  [[ -s $STATE/munge/munge.key ]] || {
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$STATE/munge/munge.key"
  }
  [[ -s $ETC/dbpass ]] || { (umask 077; head -c 24 /dev/urandom | md5sum | cut -c1-24 >"$ETC/dbpass"); }

  local cpus mem defmem changed=0
  cpus=$(node_cpus)
  mem=$(node_mem_mb)
  defmem=$((mem / cpus))
  ((defmem > 1024)) && defmem=1024

  if write_if_changed "$SLURM_CONF_FILE" 644 <<EOF; then changed=1; fi
# Written by slurm/local_cluster.sh -- edits are overwritten on the next start.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$SPOOL/slurmctld
SlurmdSpoolDir=$SPOOL/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# no systemd, no cgroups
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
LaunchParameters=use_interactive_step

# scheduling: share the node between jobs, by CPU and memory
SchedulerType=sched/backfill
# start batch jobs as soon as they are submitted (the default batches them up for 3 s)
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$defmem
# trust the CPUs/RealMemory below even if slurmd detects a different topology
SlurmdParameters=config_overrides
ReturnToService=2

# accounting (sacct), which submitit polls for job states
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# the munge socket for talking to slurmdbd (AuthInfo above does not cover that connection)
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none

# timeouts for short test jobs
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
TCPTimeout=5
BatchStartTimeout=10
KillWait=5
UnkillableStepTimeout=30
InactiveLimit=0
MinJobAge=300
Waittime=0
OverTimeLimit=0

NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE DefaultTime=60 State=UP
EOF

  if write_if_changed "$DBD_CONF_FILE" 600 <<EOF; then changed=1; fi
# Written by slurm/local_cluster.sh -- edits are overwritten on the next start.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
# localhost = MariaDB's unix socket, which MYSQL_UNIX_PORT points at (see start_slurmdbd)
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$(cat "$ETC/dbpass")
EOF

  if ((changed)) && [[ $(running_list) != none ]]; then
    say "config changed while daemons are running: run '$0 stop && $0 start' to apply it"
  fi
}

# ------------------------------------------------------------------------------------ daemons
start_munged() {
  # --force: the state dir may sit in a group-writable tree that munged would otherwise refuse.
  munged --force \
    --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
    --pid-file="${PIDFILE[munged]}" --log-file="$LOG/munged.log" \
    --seed-file="$STATE/munge/munged.seed" >>"$LOG/munged.log" 2>&1 \
    || fail "munged did not start"
  wait_for munged "munged to answer on $MUNGE_SOCKET" \
    bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"
}

# shellcheck disable=SC2120  # (called with arguments through wait_for)
mysql_root() { mariadb --no-defaults --socket="$MYSQL_SOCKET" -uroot "$@"; }

start_mariadbd() {
  local data=$STATE/mysql/data
  if [[ ! -d $data/mysql ]]; then
    say "initialising MariaDB in $data"
    mkdir -p "$data"
    mariadb-install-db --no-defaults --datadir="$data" --user=root \
      --auth-root-authentication-method=socket --skip-test-db >>"$LOG/mariadb.log" 2>&1 \
      || fail "mariadb-install-db failed"
  fi
  mkdir -p "$STATE/mysql/tmp"
  # no networking: reachable only through the socket in the state dir
  setsid mariadbd --no-defaults --user=root --datadir="$data" --tmpdir="$STATE/mysql/tmp" \
    --socket="$MYSQL_SOCKET" --pid-file="${PIDFILE[mariadbd]}" --skip-networking \
    --log-error="$LOG/mariadb.log" --skip-log-bin \
    --innodb-buffer-pool-size=128M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
    </dev/null >>"$LOG/mariadb.log" 2>&1 &
  wait_for "pid:$!" "MariaDB to answer on $MYSQL_SOCKET" mysql_root -e 'SELECT 1'
  chmod 644 "${PIDFILE[mariadbd]}" 2>/dev/null || true  # (0660 by default; status is for everyone)
}

setup_database() {
  local pass
  pass=$(cat "$ETC/dbpass")
  # shellcheck disable=SC2119
  mysql_root <<EOF || fail "could not create the slurm database/user in MariaDB"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL PRIVILEGES ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurmdbd() {
  MYSQL_UNIX_PORT=$MYSQL_SOCKET slurm_env slurmdbd >>"$LOG/slurmdbd.log" 2>&1 || fail "slurmdbd did not start"
  # sacctmgr answers only once slurmdbd has connected to MariaDB and listens
  wait_for slurmdbd "slurmdbd to answer (sacctmgr show cluster)" slurm_env sacctmgr -n show cluster
}

setup_accounting() {
  local users=(root) u
  u=${ONELORA_SLURM_SUBMIT_USER:-${SUDO_USER:-}}
  [[ -n $u && $u != root ]] && users+=("$u")
  slurm_env sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" \
    || slurm_env sacctmgr -i add cluster "$CLUSTER" >/dev/null || fail "sacctmgr add cluster failed"
  slurm_env sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" \
    || slurm_env sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" \
         Description="onelora local cluster" Organization=onelora >/dev/null \
    || fail "sacctmgr add account failed"
  for u in "${users[@]}"; do
    slurm_env sacctmgr -n -P list user "$u" format=user | grep -qx "$u" \
      || slurm_env sacctmgr -i add user "$u" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null \
      || fail "sacctmgr add user $u failed"
  done
}

start_slurmctld() {
  slurm_env slurmctld >>"$LOG/slurmctld.log" 2>&1 || fail "slurmctld did not start"
  wait_for slurmctld "slurmctld to answer (scontrol ping)" bash -c "SLURM_CONF='$SLURM_CONF_FILE' scontrol ping | grep -q UP"
}

start_slurmd() {
  slurm_env slurmd -N "$NODE" >>"$LOG/slurmd.log" 2>&1 || fail "slurmd did not start"
}

node_idle() {
  local st
  st=$(slurm_env sinfo -h -n "$NODE" -o '%T' 2>/dev/null) || return 1
  [[ $st == idle || $st == mixed || $st == allocated ]]
}

wait_node_idle() {
  local deadline=$((SECONDS + TIMEOUT)) st
  local t0=$SECONDS
  until node_idle; do
    if ((SECONDS - t0 >= 3)) && ! daemon_pid slurmd >/dev/null; then
      fail "slurmd exited while waiting for node $NODE to be idle"
    fi
    st=$(slurm_env sinfo -h -n "$NODE" -o '%T %E' 2>/dev/null || true)
    # a node left down/drained by an earlier run: bring it back
    if [[ $st == down* || $st == drain* ]]; then
      slurm_env scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    fi
    ((SECONDS < deadline)) || fail "timed out after ${TIMEOUT}s waiting for node $NODE to be idle (sinfo: ${st:-no answer})"
    sleep 0.5
  done
}

# After a fresh slurmctld: run one tiny batch job and wait until sacct reports it COMPLETED. That
# proves jobs run and accounting works, and gets slurmctld past its first scheduling pass (which
# comes ~3 s after it starts; until then a new batch job waits). Skipped if the node is busy.
smoke_test() {
  [[ $(slurm_env sinfo -h -n "$NODE" -o '%T') == idle ]] || return 0
  [[ -z $(slurm_env squeue -h -o '%i') ]] || return 0
  local jid state t0=$SECONDS
  jid=$(cd "$STATE" && slurm_env sbatch --parsable -J local_cluster_smoke -t 1 -n 1 -c 1 \
          --mem=16 -o /dev/null --wrap true 2>&1) || fail "sbatch of the test job failed: $jid"
  [[ $jid =~ ^[0-9]+$ ]] || fail "sbatch of the test job printed no job id: $jid"
  while :; do
    state=$(slurm_env sacct -X -n -P -j "$jid" -o State 2>/dev/null || true)
    [[ $state == COMPLETED ]] && return 0
    [[ $state == FAILED* || $state == CANCELLED* || $state == NODE_FAIL* || $state == TIMEOUT* ]] \
      && fail "test job $jid ended $state"
    ((SECONDS - t0 < TIMEOUT)) \
      || fail "test job $jid not reported COMPLETED by sacct after ${TIMEOUT}s (sacct: ${state:-nothing}, squeue: $(slurm_env squeue -h -j "$jid" -o '%T %R' 2>&1))"
    sleep 0.2
  done
}

# ------------------------------------------------------------------------------------ commands
cmd_start() {
  need_root start
  need_packages
  local t0=$SECONDS fresh=0
  write_configs
  local d
  for d in "${DAEMONS[@]}"; do
    if daemon_pid "$d" >/dev/null; then
      say "$d already running (pid $(daemon_pid "$d"))"
    else
      say "starting $d"
      "start_$d"
      [[ $d == slurmctld ]] && fresh=1
    fi
    case $d in
      mariadbd) setup_database ;;
      slurmdbd) setup_accounting ;;
    esac
  done
  wait_node_idle
  ((fresh)) && smoke_test
  say "cluster up in $((SECONDS - t0))s: node $NODE ($(node_cpus) CPUs, $(node_mem_mb) MB), partition $PARTITION, state $STATE"
  export_lines
}

# alive PID: the process exists and is not a zombie waiting to be reaped.
alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ ${st:0:1} != Z ]]
}

# stop_daemons NAME...: SIGTERM the daemons together, wait up to 15 s for them to exit, then SIGKILL.
stop_daemons() {
  local name pid pids=() i
  for name in "$@"; do
    if pid=$(daemon_pid "$name"); then
      say "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for ((i = 0; i < 60; i++)); do
    local alive=0
    for pid in "${pids[@]}"; do alive "$pid" && alive=1; done
    ((alive)) || break
    sleep 0.25
  done
  for pid in "${pids[@]}"; do
    if alive "$pid"; then
      say "pid $pid did not exit after 15s, killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for name in "$@"; do rm -f "${PIDFILE[$name]}"; done
}

# slurmstepd processes of this cluster (they carry our SLURM_CONF in their environment).
our_stepds() {
  local p
  for p in /proc/[0-9]*; do
    [[ $(readlink "$p/exe" 2>/dev/null) == */slurmstepd ]] || continue
    tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$SLURM_CONF_FILE" && echo "${p#/proc/}"
  done
}

cmd_stop() {
  need_root stop
  if daemon_pid slurmctld >/dev/null; then
    local jobs
    jobs=$(slurm_env squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')
    if [[ -n ${jobs// /} ]]; then
      say "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      slurm_env scancel $jobs 2>/dev/null || true
      local i
      for ((i = 0; i < 30; i++)); do
        [[ -z $(slurm_env squeue -h -o '%i' 2>/dev/null) ]] && break
        sleep 0.5
      done
    fi
  fi
  # slurmctld hands its last job records to slurmdbd, which writes them to MariaDB: stop in that order
  stop_daemons slurmd slurmctld
  stop_daemons slurmdbd
  stop_daemons mariadbd munged
  local stepds
  stepds=$(our_stepds | tr '\n' ' ')
  if [[ -n ${stepds// /} ]]; then
    say "killing leftover slurmstepd: $stepds"
    # shellcheck disable=SC2086
    kill -KILL $stepds 2>/dev/null || true
  fi
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  say "stopped"
}

cmd_status() {
  local d pid rc=0
  echo "state dir: $STATE"
  for d in "${DAEMONS[@]}"; do
    if pid=$(daemon_pid "$d"); then
      printf '  %-10s running (pid %s)\n' "$d" "$pid"
    else
      printf '  %-10s stopped\n' "$d"
      rc=3
    fi
  done
  if [[ -f $SLURM_CONF_FILE ]] && daemon_pid slurmctld >/dev/null; then
    echo
    slurm_env sinfo || rc=1
    echo
    slurm_env squeue || rc=1
  fi
  return $rc
}

cmd_env() {
  [[ -f $SLURM_CONF_FILE ]] || die "no config yet in $STATE; run: $0 start"
  export_lines
}

cmd_purge() {
  cmd_stop
  say "removing $STATE"
  rm -rf "$STATE"
  [[ $RUN == "$STATE"/* ]] || rm -rf "$RUN"
}

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  env) cmd_env ;;
  logs) show_logs "${2:-40}" 2>&1 ;;
  purge) cmd_purge ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
