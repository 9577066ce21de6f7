#!/usr/bin/env bash
# Single-node throw-away SLURM cluster for tests (Debian 12, slurm-wlm 22.05, munge 0.5.15).
#
#   tests/infra/slurm_cluster.sh start STATE_DIR   # start munged + slurmctld + slurmd, wait for the node to be idle
#   tests/infra/slurm_cluster.sh stop  STATE_DIR   # cancel jobs, stop the daemons, clean up (safe to call twice)
#   tests/infra/slurm_cluster.sh status STATE_DIR  # exit 0 if the cluster answers
#
# Needs root and `apt-get install -y slurm-wlm munge`. Everything (munge key/socket, slurm.conf,
# state, spool, logs, pid files) lives under STATE_DIR; nothing under /etc, /run or /var is written.
# Client commands (srun, sbatch, squeue, scancel, scontrol, submitit) must see
#     export SLURM_CONF=STATE_DIR/etc/slurm.conf
# (printed by `start`, also written to STATE_DIR/env): Debian's libslurm otherwise reads
# /etc/slurm/slurm.conf, which this script does not create. slurm.conf carries AuthInfo=socket=...
# so clients talk to this cluster's munged, not /run/munge.
# Accounting is off, as on many small clusters: `sacct` answers "Slurm accounting storage is
# disabled", and a job's record leaves squeue/scontrol MinJobAge seconds after it ended (the
# study must cope with both). `source STATE_DIR/env` sets SLURM_CONF.
# `stop` cancels all jobs, stops the daemons (pid files), kills leftover slurmstepd sessions of
# this cluster and removes STATE_DIR/{state,spool,run}; etc/, log/, munge/munge.key stay.
#
# Optional environment knobs:
#   SLURM_CLUSTER_PARTITION   partition name                  (default: debug)
#   SLURM_CLUSTER_CPUS        CPUs advertised for the node    (default: real count; a larger value
#                             oversubscribes and adds SlurmdParameters=config_overrides)
#   SLURM_CLUSTER_MEM_MB      RealMemory of the node in MB    (default: from `slurmd -C`)
#   SLURM_CLUSTER_DEFMEM_MB   DefMemPerCPU                    (default: 1024)
#   SLURM_CLUSTER_CTLD_PORT   slurmctld port                  (default: 6817; slurmd uses +1)
#   SLURM_CLUSTER_KILLWAIT    KillWait seconds, SIGTERM->SIGKILL (default: 5)
#   SLURM_CLUSTER_CRED_EXPIRE cred_expire seconds; also the delay before a requeued job may
#                             start again (slurm default 120)          (default: 10)
#   SLURM_CLUSTER_TIMEOUT     seconds to wait for the node to become idle (default: 60)
#   SLURM_CLUSTER_MIN_JOB_AGE MinJobAge: seconds an ended job stays in squeue (default: 2; SLURM's
#                             own default is 300), so that jobs do leave the queue in the tests
set -euo pipefail

die() { echo "slurm_cluster: $*" >&2; exit 1; }

usage() { echo "usage: $0 {start|stop|status} STATE_DIR" >&2; exit 2; }

[[ $# -eq 2 ]] || usage
ACTION=$1
if [[ ! -d $2 ]]; then
    [[ $ACTION == start ]] || exit 0  # nothing to stop / no status
    mkdir -p -- "$2"
fi
S=$(cd -- "$2" && pwd -P)

CONF=$S/etc/slurm.conf
MUNGE_DIR=$S/munge
MUNGE_SOCK=$MUNGE_DIR/munge.socket
RUN=$S/run
LOG=$S/log
export SLURM_CONF=$CONF

pid_alive() {  # pid_alive PIDFILE -> 0 if the pid in the file is a live process
    local p
    [[ -s $1 ]] || return 1
    p=$(<"$1")
    [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null
}

kill_pidfiles() {  # kill_pidfiles PIDFILE...: TERM them all, wait up to 10 s, then KILL
    local f p i alive pids=()
    for f in "$@"; do
        [[ -s $f ]] && p=$(<"$f") && [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null &&
            kill -TERM "$p" 2>/dev/null && pids+=("$p")
        rm -f -- "$f"
    done
    for i in $(seq 50); do
        alive=""
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && { alive=1; break; }; done
        [[ $alive ]] || return 0
        sleep 0.2
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}

log_tails() {
    local f
    for f in "$LOG/slurmctld.log" "$LOG/slurmd.log" "$MUNGE_DIR/munged.log"; do
        [[ -f $f ]] || continue
        echo "----- tail $f -----" >&2
        tail -n 25 -- "$f" >&2
    done
}

fail() {  # fail MESSAGE: show the logs, stop whatever was started, exit 1
    log_tails
    do_stop quiet
    die "$*"
}

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true; }

cluster_up() {
    pid_alive "$MUNGE_DIR/munged.pid" && pid_alive "$RUN/slurmctld.pid" &&
        pid_alive "$RUN/slurmd.pid" && [[ -f $CONF ]] && scontrol ping >/dev/null 2>&1
}

print_env() {
    echo "export SLURM_CONF=$CONF"
}

# slurmstepd (and the job processes under it) outlive slurmd. Ours are recognised by their
# working directory / open log file (slurmd chdirs to the directory of SlurmdLogFile, and
# slurmstepd keeps slurmd.log open); each slurmstepd runs in its own session, so killing that
# session takes the job's processes with it.
kill_stepds() {
    local d p sid sids=""
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        [[ $(head -c 10 "$d/cmdline" 2>/dev/null | tr -d '\0') == slurmstepd ]] || continue
        if [[ $(readlink "$d/cwd" 2>/dev/null) == "$LOG" ]] ||
            ls -l "$d/fd" 2>/dev/null | grep -qF -- "$LOG/slurmd.log"; then
            sid=$(ps -o sid= -p "$p" 2>/dev/null | tr -d ' ')
            [[ $sid =~ ^[0-9]+$ && $sid != 0 && $sid != 1 ]] && sids+=" $sid"
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    for sid in $sids; do
        ps -eo pid=,sid= | awk -v s="$sid" -v me="$$" '$2 == s && $1 != me {print $1}' |
            while read -r p; do kill -KILL "$p" 2>/dev/null || true; done
    done
}

write_conf() {
    local host cpus mem realcpus topo over=""
    host=$(hostname -s)
    realcpus=$(nproc)
    cpus=${SLURM_CLUSTER_CPUS:-$realcpus}
    mem=${SLURM_CLUSTER_MEM_MB:-$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')}
    [[ $mem =~ ^[0-9]+$ ]] || die "could not read RealMemory from 'slurmd -C'"
    if [[ $cpus == "$realcpus" ]]; then
        # exact topology as slurmd sees it, so slurmd does not complain
        topo=$(slurmd -C | head -n1 | grep -o 'CPUs=.*ThreadsPerCore=[0-9]*')
    else
        topo="CPUs=$cpus"
        over="SlurmdParameters=config_overrides"
    fi
    local port=${SLURM_CLUSTER_CTLD_PORT:-6817}
    mkdir -p "$S/etc"
    : >"$S/etc/plugstack.conf"
    cat >"$CONF" <<EOF
# generated by tests/infra/slurm_cluster.sh -- single-node test cluster
ClusterName=testcluster
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK,cred_expire=${SLURM_CLUSTER_CRED_EXPIRE:-10}
PlugStackConfig=$S/etc/plugstack.conf
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=${SLURM_CLUSTER_DEFMEM_MB:-1024}
ReturnToService=2
JobRequeue=1
KillWait=${SLURM_CLUSTER_KILLWAIT:-5}
InactiveLimit=0
# an ended job leaves squeue/scontrol after this many seconds (the scheduler forgets it)
MinJobAge=${SLURM_CLUSTER_MIN_JOB_AGE:-2}
# schedule often (defaults 60 s / 30 s) so requeued jobs restart quickly, and start batch jobs
# without the default 3 s batch_sched_delay
SchedulerParameters=sched_interval=5,bf_interval=5,batch_sched_delay=0
Waittime=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
$over
NodeName=$host NodeAddr=127.0.0.1 $topo RealMemory=$mem State=UNKNOWN
PartitionName=${SLURM_CLUSTER_PARTITION:-debug} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    pid_alive "$MUNGE_DIR/munged.pid" && return 0
    mkdir -p "$MUNGE_DIR"
    chmod 755 "$MUNGE_DIR"  # munged wants o+x on the socket's directory
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        mungekey --create --keyfile="$MUNGE_DIR/munge.key" >/dev/null
    fi
    chmod 600 "$MUNGE_DIR/munge.key"
    rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
    # --force: munged refuses sockets below a directory without o+x (e.g. pytest's 0700
    # /tmp/pytest-of-root); --force turns that into a warning. Running as root is accepted.
    munged --force \
        --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCK" \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" ||
        fail "munged failed to start"
    local i
    for i in $(seq 50); do [[ -S $MUNGE_SOCK ]] && break; sleep 0.1; done
    munge -n -S "$MUNGE_SOCK" | unmunge -S "$MUNGE_SOCK" >/dev/null ||
        fail "munge self-test failed"
}

do_start() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    command -v slurmctld >/dev/null && command -v munged >/dev/null ||
        die "slurm/munge not installed: apt-get install -y slurm-wlm munge"
    if cluster_up; then
        echo "slurm_cluster: already running in $S" >&2
        print_env
        return 0
    fi
    do_stop quiet  # clear any half-started leftovers
    mkdir -p "$S/state" "$S/spool/slurmd" "$RUN" "$LOG"
    write_conf
    printf 'export SLURM_CONF=%s\n' "$CONF" >"$S/env"
    start_munge

    local t0=$SECONDS
    slurmctld -i -f "$CONF" || fail "slurmctld failed to start"
    slurmd -f "$CONF" || fail "slurmd failed to start"

    local timeout=${SLURM_CLUSTER_TIMEOUT:-60} st=""
    while ((SECONDS - t0 < timeout)); do
        st=$(node_state)
        case $st in
            idle) break ;;
            down* | drain* | fail*)
                # ReturnToService=2 should revive it; nudge it anyway
                scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    if [[ $st != idle ]]; then
        sinfo -N -l >&2 || true
        fail "node not idle after ${timeout}s (state: '${st:-no answer}'); daemons stopped again"
    fi
    print_env
}

do_stop() {
    local quiet=${1:-}
    [[ -f $CONF ]] && pid_alive "$RUN/slurmctld.pid" && {
        # cancel every job of this cluster so no job processes outlive it
        local ids
        ids=$(squeue -h -o %A 2>/dev/null || true)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086
            scancel $ids 2>/dev/null || true
            local i
            for i in $(seq 30); do
                [[ -z $(squeue -h -t R,CG,S -o %A 2>/dev/null) ]] && break
                sleep 0.5
            done
        fi
    }
    kill_pidfiles "$RUN/slurmd.pid" "$RUN/slurmctld.pid"
    kill_stepds
    kill_pidfiles "$MUNGE_DIR/munged.pid"
    rm -rf -- "$S/state" "$S/spool" "$RUN" "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
    [[ $quiet ]] || echo "slurm_cluster: stopped ($S)" >&2
}

case $ACTION in
    start) do_start ;;
    stop) do_stop ;;
    status) cluster_up && { sinfo; print_env; } ;;
    *) usage ;;
esac
