#!/usr/bin/env bash
# Start a single-node Slurm cluster on this machine for the project's Slurm tests (`make slurm-up`).
#
# Runs as root from a non-interactive shell. Installs the Debian packages only when they are
# missing, writes /etc/slurm/slurm.conf (refusing to replace one it did not write), starts munged,
# slurmctld and slurmd, waits for the node to be idle and runs one srun. Running it again while the
# cluster is up changes nothing. Settings: DCUTMIX_SLURM_DIR (state, spool and logs; default
# /var/lib/dcutmix-slurm) and DCUTMIX_SLURM_WAIT_S (how long to wait for the node; default 60).
set -euo pipefail

STATE_DIR=${DCUTMIX_SLURM_DIR:-/var/lib/dcutmix-slurm}
WAIT_S=${DCUTMIX_SLURM_WAIT_S:-60}
SLURM_CONF_FILE=/etc/slurm/slurm.conf
MARKER="# Written by dcutmix .ci/slurm-up.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)
RUN_DIR=$STATE_DIR/run

log() { echo "slurm-up: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}
is_running() { # pid-file
	[[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}
show_logs() {
	local f
	for f in "$STATE_DIR"/log/slurmctld.log "$STATE_DIR"/log/slurmd.log; do
		[[ -f $f ]] && { log "last lines of $f:" && tail -n 15 "$f" >&2; }
	done
	return 0
}

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	command -v apt-get >/dev/null ||
		die "missing ${missing[*]} and no apt-get to install them; install Slurm and munge by hand"
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq </dev/null
	apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
}

render_config() {
	local host cpus mem
	host=$(hostname -s)
	cpus=$(nproc)
	mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
	[[ -n $mem ]] || die "could not read RealMemory from 'slurmd -C'"
	# DefMemPerCPU: a job that asks for no memory gets its share of the node, not all of it, so
	# such jobs still run side by side.
	cat <<EOF
$MARKER; it is rewritten on each run.
ClusterName=dcutmix
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
JobRequeue=1
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
DefMemPerCPU=$((mem / cpus))
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

write_config() {
	local conf
	conf=$(render_config)
	if [[ -f $SLURM_CONF_FILE ]] && ! grep -qF "$MARKER" "$SLURM_CONF_FILE"; then
		die "$SLURM_CONF_FILE exists and was not written by this script; move it away first"
	fi
	mkdir -p /etc/slurm "$RUN_DIR" "$STATE_DIR"/{state,spool,log}
	if [[ -f $SLURM_CONF_FILE ]]; then
		[[ $(cat "$SLURM_CONF_FILE") == "$conf" ]] && return 0
		# The old file names the pid files of daemons that may still run with the old settings.
		log "slurm.conf changed; stopping the daemons started with the old one"
		bash "$(dirname "$0")/slurm-down.sh" --keep-munge
	fi
	printf '%s\n' "$conf" >"$SLURM_CONF_FILE"
}

start_munge() {
	munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
	local key=/etc/munge/munge.key i
	if [[ ! -s $key ]]; then
		log "creating $key"
		dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
	fi
	# munged refuses to start unless its key and folders belong to the munge user and are private.
	chown munge:munge /etc/munge "$key"
	chmod 700 /etc/munge
	chmod 400 "$key"
	mkdir -p /run/munge /var/lib/munge /var/log/munge
	chown munge:munge /run/munge /var/lib/munge /var/log/munge
	chmod 755 /run/munge
	runuser -u munge -- munged
	for i in $(seq 50); do
		munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	die "munged started but 'munge -n | unmunge' still fails; see /var/log/munge/munged.log"
}

start_daemon() { # name args...
	local name=$1
	shift
	is_running "$RUN_DIR/$name.pid" && return 0
	"$name" "$@" || {
		show_logs
		die "$name did not start"
	}
}

wait_for_idle() {
	local host deadline=$((SECONDS + WAIT_S)) state="" resumed=0
	host=$(hostname -s)
	while ((SECONDS < deadline)); do
		state=$(sinfo -h -N -n "$host" -o %t 2>/dev/null | head -n 1 || true)
		case $state in
		idle | mix | alloc) return 0 ;;
		down* | drain* | drng*)
			# A node an earlier controller saw go away stays down until resumed once.
			if ((!resumed)); then
				scontrol update NodeName="$host" State=RESUME 2>/dev/null || true
				resumed=1
			fi
			;;
		esac
		sleep 1
	done
	show_logs
	die "node $host is '${state:-not listed}', not idle, after ${WAIT_S}s" \
		"(see the logs above, or wait longer with DCUTMIX_SLURM_WAIT_S)"
}

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages, starts daemons): sudo make slurm-up"
started=$SECONDS
install_packages
write_config
start_munge
# -c: a fresh test cluster forgets the jobs of an earlier one instead of running them again.
start_daemon slurmctld -c
start_daemon slurmd
wait_for_idle
out=$(timeout 60 srun -N1 -n1 hostname 2>&1) || {
	show_logs
	die "'srun -N1 -n1 hostname' failed: $out"
}
log "cluster up in $((SECONDS - started))s: partition debug, node $out ($(nproc) CPUs)," \
	"logs in $STATE_DIR/log"
