# hybridcluster. `make run` starts the main job on embedded defaults; `make test`
# installs what the tests need (apt packages, zfs-fuse daemon) and runs every test.
GO ?= go
SEEDS_TEST ?= 50
SEEDS_SIM ?= 10000

.PHONY: build test test-go deps run e2e sim proto bench bench-storage bench-failover bench-ftp bench-http bench-mysql lint

build:
	$(GO) build ./...

deps:
	bash scripts/test-deps.sh

# The test command: dependencies first, then every Go test (ZFS ones for real),
# then bounded simulator sweeps, with the seeds' faults and without any
# (`make sim` runs 10,000 seeds).
test: deps test-go

test-go:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...
	$(GO) run ./cmd/hcsim -seeds $(SEEDS_TEST)
	$(GO) run ./cmd/hcsim -seeds 20 -faults 0

# The main job: a local 3-node cluster of real hcnode processes on
# 127.0.0.1 with a demo site (scripts/run-local.sh; Ctrl-C stops it).
run:
	sh scripts/run-local.sh

# Only the end-to-end tests: real hcnode processes, hcctl, curl.
e2e:
	$(GO) test -count=1 -timeout 20m -v -run 'TestE2E' ./runtime/localcluster/

# Repeated kill -9 failovers under writes; last line:
# failover_p99_s=X rpo_p99_s=Y runs=N
RUNS ?= 20
bench-failover:
	$(GO) run ./cmd/hcbench failover -runs $(RUNS)

# FTP throughput through a non-master node against the master directly,
# 100 MiB file, real hcnode processes and curl; last line:
# upload_ratio=R download_ratio=R2
bench-ftp:
	$(GO) run ./cmd/hcftpbench -size 100 -runs 5

sim:
	$(GO) run ./cmd/hcsim -seeds $(SEEDS_SIM)

# The HTTP front end against HAProxy and the backend directly (wrk), then
# migrations under load on a 3-node local cluster and the pause of a
# planned move of a 256 MiB site; last line:
# front_vs_haproxy=R front_vs_direct=R2 added_p50_ms=A move_hold_p99_ms=M failed=F
bench-http:
	@command -v haproxy >/dev/null && command -v wrk >/dev/null || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy wrk)
	$(GO) run ./cmd/hcbench http -compare-net-http

proto:
	protoc --plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
		--go_out=. --go_opt=paths=source_relative messages/hc.proto

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./sim/

bench-mysql:
	$(GO) run ./cmd/hcbench mysql

bench-storage:
	$(GO) run ./cmd/hcstoragebench

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
