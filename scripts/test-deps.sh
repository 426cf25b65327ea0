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
# The cluster layer's etcd provider is tested against a real etcd (the
# tests start their own on loopback; the packaged service is not used).
command -v etcd >/dev/null 2>&1 || need="$need etcd-server"
command -v lftp >/dev/null 2>&1 || need="$need lftp"
if [ -n "$need" ]; then
	log "installing:$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q $need
fi

# The ZFS conformance tests run for real: start the zfs-fuse daemon.
sh "$(dirname "$0")/setup-zfs.sh"
