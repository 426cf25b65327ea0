#!/bin/sh
# Make zfs usable for the ZFS tests and hcstoragebench: install zfs-fuse if
# missing (Debian/Ubuntu, as root), start its daemon if not running, and wait
# (bounded) until `zpool list` answers. Idempotent; no systemd assumed, so it
# works in containers and CI. Production nodes run stock OpenZFS instead.
set -eu

WAIT_SECONDS_MAX=${WAIT_SECONDS_MAX:-30}

log() { printf 'setup-zfs: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
	command -v sudo >/dev/null 2>&1 || { log "must run as root (no sudo found)"; exit 1; }
else
	SUDO=
fi

if ! command -v zfs-fuse >/dev/null 2>&1 && [ ! -x /usr/sbin/zfs-fuse ]; then
	log "installing zfs-fuse"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q zfs-fuse
fi
PATH=$PATH:/usr/sbin:/sbin
export PATH

# FUSE needs its device node (containers sometimes lack it).
if [ ! -e /dev/fuse ]; then
	$SUDO mknod -m 666 /dev/fuse c 10 229 || log "could not create /dev/fuse"
fi

# ANSWER_SECONDS_MAX bounds one `zpool list`: a wedged daemon (seen here
# once, after hours of pools made and destroyed and nodes killed: mounts
# and then `zpool list` hung in D state) never answers, and a probe without
# a bound would hang whatever called this script.
ANSWER_SECONDS_MAX=${ANSWER_SECONDS_MAX:-15}
answers() { timeout "$ANSWER_SECONDS_MAX" zpool list >/dev/null 2>&1; }

# drop_dead_mounts unmounts (lazily, children first) the fuse.zfs mounts no
# daemon serves any more; with "all", every fuse.zfs mount (no daemon runs).
# A zfs-fuse daemon that died (killed, or gone with a restart of the
# machine's services) leaves its mounts behind. They still count as
# mounted, so nothing mounts the datasets again, and whatever looks in them
# gets "Transport endpoint is not connected" (seen here: make run's site
# app failing to start in its own directory). Once they are gone, hcnode
# mounts its datasets when it starts.
drop_dead_mounts() {
	dropped=0
	for m in $(awk '$3 == "fuse.zfs" {print $2}' /proc/mounts | sort -r); do
		if [ "${1:-}" = all ] || ! timeout "$ANSWER_SECONDS_MAX" stat -- "$m" >/dev/null 2>&1; then
			$SUDO umount -l "$m" 2>/dev/null && dropped=$((dropped + 1))
		fi
	done
	if [ "$dropped" -gt 0 ]; then
		log "dropped $dropped dead zfs-fuse mounts"
	fi
}

rc=0
answers || rc=$?
if [ "$rc" -eq 0 ]; then
	drop_dead_mounts
	log "zfs is ready"
	exit 0
fi
if [ "$rc" -eq 124 ] && pgrep -x zfs-fuse >/dev/null 2>&1; then
	# Wedged: kill it (its stuck callers then fail), drop its dead mounts,
	# forget its pools (file-backed test pools whose files may be gone),
	# and start a new one below.
	log "the zfs-fuse daemon does not answer within ${ANSWER_SECONDS_MAX}s: restarting it"
	$SUDO pkill -9 -x zfs-fuse || true
	sleep 1
	drop_dead_mounts all
	$SUDO rm -f /etc/zfs/zpool.cache
fi

start_daemon() {
	if ! pgrep -x zfs-fuse >/dev/null 2>&1; then
		log "starting the zfs-fuse daemon"
		drop_dead_mounts all
		# A stale pid file from a dead daemon makes it refuse to start.
		$SUDO rm -f /var/run/zfs-fuse.pid /run/zfs-fuse.pid
		$SUDO zfs-fuse
	fi
}

start_daemon
waited=0
until answers; do
	# A daemon that was shutting down when we looked is gone by now.
	start_daemon
	if [ "$waited" -ge "$WAIT_SECONDS_MAX" ]; then
		log "zpool list still failing after ${WAIT_SECONDS_MAX}s:"
		zpool list >&2 || true
		exit 1
	fi
	sleep 1
	waited=$((waited + 1))
done
log "zfs is ready (zfs-fuse, after ${waited}s)"
