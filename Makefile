# hybridcluster. `make run` starts the main job on embedded defaults; `make test`
# installs what the tests need (apt packages, zfs-fuse daemon) and runs every test.
GO ?= go
SEEDS_TEST ?= 50
SEEDS_SIM ?= 10000

.PHONY: build test test-go deps run sim proto bench bench-storage lint

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

run: build
	$(GO) run ./cmd/hcsim -seed 1 -v -nodes 3 -sites 3

sim:
	$(GO) run ./cmd/hcsim -seeds $(SEEDS_SIM)

proto:
	protoc --plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
		--go_out=. --go_opt=paths=source_relative messages/hc.proto

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./sim/

bench-storage:
	$(GO) run ./cmd/hcstoragebench

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
