#!/bin/sh
# `make run`: a local 3-node hybridcluster on 127.0.0.1, three real hcnode
# processes with their own ports and data directories under $RUN_DIR
# (default .run), on ZFS when zfs already works here (as root), else on the
# portable driver. Creates a demo site and prints how to reach it and the
# admin endpoint. Ctrl-C stops the cluster; data stays for the next run
# (`rm -rf .run` to start afresh).
set -eu

RUN_DIR=${RUN_DIR:-.run}
NODES=${NODES:-3}
# Bounded waits (seconds): each node's admin endpoint, then the demo site.
WAIT_NODE_MAX=${WAIT_NODE_MAX:-30}
WAIT_SITE_MAX=${WAIT_SITE_MAX:-60}

log() { printf 'run: %s\n' "$*" >&2; }

mkdir -p "$RUN_DIR/bin"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
log "building hcnode, hcctl, hcdemoapp"
go build -o "$RUN_DIR/bin/" ./cmd/hcnode ./cmd/hcctl ./cmd/hcdemoapp

token() {
	[ -s "$1" ] || { od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$1"; chmod 600 "$1"; }
}
token "$RUN_DIR/node.token"
token "$RUN_DIR/admin.token"

# Storage: ZFS on a file-backed pool if zfs answers and we are root.
STORAGE=portable
if [ "$(id -u)" -eq 0 ] && command -v zpool >/dev/null 2>&1 && zpool list >/dev/null 2>&1; then
	if ! zpool list hcrun >/dev/null 2>&1; then
		# Sparse, shared by the three nodes. Every snapshot of the last
		# hour is kept (the retention's default), so a busy database's
		# churn adds up: 2 GiB filled in minutes under sysbench.
		[ -f "$RUN_DIR/zpool.img" ] || truncate -s 8G "$RUN_DIR/zpool.img"
		zpool create -m "$RUN_DIR/zfs" hcrun "$RUN_DIR/zpool.img" 2>/dev/null ||
			zpool import -d "$RUN_DIR" hcrun 2>/dev/null || true
	fi
	# A zfs-fuse daemon that died leaves its mounts behind, dead ("Transport
	# endpoint is not connected"), and the next daemon's mounts of the pool
	# fail under them: unmount what is dead under the pool's directory and
	# import the pool again, which mounts it afresh.
	# (The pool's root may be unmounted and fine while mounts under it
	# are dead, so each is looked at.)
	dead=$(awk -v r="$RUN_DIR/zfs" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts |
		while read -r m; do timeout 15 stat -- "$m" >/dev/null 2>&1 || echo "$m"; done)
	if zpool list hcrun >/dev/null 2>&1 && { [ -n "$dead" ] || ! ls "$RUN_DIR/zfs" >/dev/null 2>&1; }; then
		log "the pool's mounts are dead (a zfs-fuse daemon restarted); mounting it again"
		awk -v r="$RUN_DIR/zfs" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r |
			while read -r m; do umount -l "$m" 2>/dev/null || true; done
		zpool export hcrun 2>/dev/null || true
		zpool import -d "$RUN_DIR" hcrun 2>/dev/null || true
	fi
	zpool list hcrun >/dev/null 2>&1 && ls "$RUN_DIR/zfs" >/dev/null 2>&1 && STORAGE=zfs
fi
log "storage: $STORAGE"

MEMBERS=""
i=1
while [ "$i" -le "$NODES" ]; do
	MEMBERS="$MEMBERS -member n$i=127.0.0.1:$((7940 + i)),http://127.0.0.1:$((7950 + i)),127.0.0.1:$((7970 + i))"
	i=$((i + 1))
done

PIDS=""
stop() {
	trap - INT TERM EXIT
	log "stopping the cluster"
	for p in $PIDS; do kill -TERM "$p" 2>/dev/null || true; done
	for p in $PIDS; do wait "$p" 2>/dev/null || true; done
	log "stopped; data kept in $RUN_DIR"
}
trap stop INT TERM EXIT

i=1
while [ "$i" -le "$NODES" ]; do
	extra=""
	[ "$STORAGE" = zfs ] && extra="-storage zfs -zfs-root hcrun/n$i"
	# shellcheck disable=SC2086
	"$RUN_DIR/bin/hcnode" -node "n$i" -data-dir "$RUN_DIR/n$i" $extra $MEMBERS \
		-http "127.0.0.1:$((8080 + i))" -admin "127.0.0.1:$((7080 + i))" \
		-actor "127.0.0.1:$((7940 + i))" -internal "127.0.0.1:$((7950 + i))" -ftp "127.0.0.1:$((2120 + i))" \
		-cluster "127.0.0.1:$((7960 + i))" -cluster-health "127.0.0.1:$((7970 + i))" \
		-mysql "127.0.0.1:$((3306 + i))" \
		-node-token-file "$RUN_DIR/node.token" -admin-token-file "$RUN_DIR/admin.token" \
		>"$RUN_DIR/n$i.log" 2>&1 &
	PIDS="$PIDS $!"
	i=$((i + 1))
done

HCCTL="$RUN_DIR/bin/hcctl"
export HC_ENDPOINT=http://127.0.0.1:7081 HC_TOKEN_FILE="$RUN_DIR/admin.token"
i=1
while [ "$i" -le "$NODES" ]; do
	n=0
	until HC_ENDPOINT=http://127.0.0.1:$((7080 + i)) "$HCCTL" health >/dev/null 2>&1; do
		n=$((n + 1))
		if [ "$n" -gt $((WAIT_NODE_MAX * 5)) ]; then
			log "node n$i did not come up within ${WAIT_NODE_MAX}s; its log:"
			tail -20 "$RUN_DIR/n$i.log" >&2
			exit 1
		fi
		sleep 0.2
	done
	i=$((i + 1))
done
log "$NODES nodes up"

if ! "$HCCTL" site show demo >/dev/null 2>&1; then
	# The balancer needs every node's first report before it places a site.
	n=0
	until "$HCCTL" site create demo --domain demo.localhost --app "$RUN_DIR/bin/hcdemoapp" \
		--mysql-user demo:demo-pw:demo_db >/dev/null 2>"$RUN_DIR/create.err"; do
		n=$((n + 1))
		if [ "$n" -gt $((WAIT_NODE_MAX * 2)) ]; then
			log "could not create the demo site:"; cat "$RUN_DIR/create.err" >&2; exit 1
		fi
		sleep 0.5
	done
fi
n=0
until curl -fsS -o /dev/null -H 'Host: demo.localhost' http://127.0.0.1:8081/health 2>/dev/null; do
	n=$((n + 1))
	if [ "$n" -gt $((WAIT_SITE_MAX * 5)) ]; then
		log "the demo site is not served within ${WAIT_SITE_MAX}s; see $RUN_DIR/n*.log"; exit 1
	fi
	sleep 0.2
done

# The admin view follows the nodes' reports (one a second): wait (bounded)
# until it shows the demo site before printing it.
n=0
until "$HCCTL" site show demo 2>/dev/null | grep -q active || [ "$n" -ge 50 ]; do
	n=$((n + 1))
	sleep 0.2
done

cat <<EOF

hybridcluster: $NODES nodes on 127.0.0.1 (storage: $STORAGE), demo site served by every node:

  curl http://demo.localhost:8081/      # also :8082 and :8083 (any node forwards to the master)
  curl -X POST 'http://demo.localhost:8082/write?id=1'
  mariadb -h 127.0.0.1 -P 3307 -u demo -pdemo-pw demo_db   # also -P 3308, 3309

Admin endpoint (hcctl reads these variables; see $RUN_DIR/bin/hcctl -h):

  export HC_ENDPOINT=$HC_ENDPOINT HC_TOKEN_FILE=$HC_TOKEN_FILE
  $HCCTL sites
  $HCCTL nodes
  $HCCTL migrate demo n2
  $HCCTL events

Logs: $RUN_DIR/n1.log .. n$NODES.log. Ctrl-C stops the cluster.
EOF
"$HCCTL" sites || true
# Wait until interrupted (or a node exits).
for p in $PIDS; do wait "$p" || true; done
