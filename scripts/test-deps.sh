#!/bin/sh
# Install what the tests need on a fresh Debian machine (as root), then make
# sure the services they use run. Idempotent: a machine that has everything
# only pays for the checks.
set -eu
log() { printf 'test-deps: %s\n' "$*" >&2; }

need=""
command -v protoc >/dev/null 2>&1 || need="$need protobuf-compiler"
command -v zfs-fuse >/dev/null 2>&1 || [ -x /usr/sbin/zfs-fuse ] || need="$need zfs-fuse"
# The end-to-end tests use real clients.
command -v curl >/dev/null 2>&1 || need="$need curl"
# The MySQL tests run their own mariadbd processes and the mariadb client.
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need="$need mariadb-server"
command -v mariadb >/dev/null 2>&1 || need="$need mariadb-client"
# make bench-mysql compares the MySQL front end with HAProxy in TCP mode.
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need="$need haproxy"
# The cluster layer's etcd provider is tested against a real etcd (the
# tests start their own on loopback; the packaged service is not used).
command -v etcd >/dev/null 2>&1 || need="$need etcd-server"
command -v lftp >/dev/null 2>&1 || need="$need lftp"
# A real MySQL application on libmysqlclient (prepared statements as PHP's
# mysqli sends them) runs through planned moves.
command -v sysbench >/dev/null 2>&1 || need="$need sysbench"
if [ -n "$need" ]; then
	log "installing:$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# The system's mariadb service must not start (the tests run their
	# own servers): a policy-rc.d that denies service starts, for the
	# install only, unless the machine has one already.
	policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		policy=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
	fi
	apt-get install -y -q $need
	[ -z "$policy" ] || rm -f "$policy"
fi

# The ZFS conformance tests run for real: start the zfs-fuse daemon.
sh "$(dirname "$0")/setup-zfs.sh"
