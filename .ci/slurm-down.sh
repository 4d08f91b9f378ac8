#!/usr/bin/env bash
# Stop the single-node Slurm cluster that .ci/slurm-up.sh started (`make slurm-down`).
#
# Stops slurmd, slurmctld and (unless --keep-munge) munged by the pids in their pid files, as
# named by the slurm.conf that slurm-up wrote. Packages, slurm.conf and logs stay; jobs still
# queued are forgotten by the next slurm-up.
set -euo pipefail

SLURM_CONF_FILE=/etc/slurm/slurm.conf

log() { echo "slurm-down: $*" >&2; }

pid_file() { # slurm.conf key
	[[ -f $SLURM_CONF_FILE ]] && sed -n "s/^$1=//p" "$SLURM_CONF_FILE" | head -n 1
	return 0
}

stop() { # name pid-file
	local name=$1 pidfile=$2 pid i
	[[ -n $pidfile && -s $pidfile ]] || return 0
	pid=$(cat "$pidfile")
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid"
	for i in $(seq 100); do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "stopped $name (pid $pid)"
			return 0
		fi
		sleep 0.1
	done
	log "$name (pid $pid) ignored SIGTERM for 10s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
}

stop slurmd "$(pid_file SlurmdPidFile)"
stop slurmctld "$(pid_file SlurmctldPidFile)"
if [[ ${1:-} != --keep-munge ]]; then
	stop munged /run/munge/munged.pid
fi
