# phantom-authz — the two commands: `make run` (the local stack) and `make test`.
SHELL := /bin/bash
GO    ?= go
BIN   := bin
TOOLS := .tools/bin

.PHONY: all build build-demo-api tools test unit manifests e2e run bench bench-go fuzz clean

all: build

build: ## Build the binaries into bin/.
	$(GO) build -o $(BIN)/phantom-authz ./cmd/phantom-authz

tools: ## Install Envoy, Hydra, Jaeger and Keycloak into .tools/, and redis-server (apt) when missing (idempotent; fast when done).
	bash e2e/tools/install.sh

test: tools ## Install what the tests need, then run every test, end-to-end included.
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(find . -name '*.go' -not -path './.tools/*')); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(GO) test -count=1 -timeout 15m ./...
	$(MAKE) manifests

# The Kubernetes, Istio and Envoy Gateway manifests, decoded strictly into
# those projects' Go API types: a module of its own (e2e/manifests), so the
# service binary never links them; `go test ./...` above does not enter it.
manifests: ## Check the Kubernetes, Istio and Envoy Gateway manifests against their projects' API types.
	cd e2e/manifests && $(GO) vet ./... && $(GO) test -count=1 ./...

e2e: tools ## End-to-end tests only (real Envoy and Hydra).
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(GO) test -count=1 ./e2e/...

unit: ## Unit tests only (no tools needed).
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

run: tools build build-demo-api ## Start the local stack: Hydra, phantom-authz, the demo API, Envoy and Jaeger (Ctrl-C stops it).
	bash envoy/local/run.sh

.PHONY: build-demo-api
build-demo-api: ## Build the demo upstream API (echoes the headers it receives) into bin/.
	$(GO) build -o $(BIN)/demo-api ./cmd/demo-api

bench: tools ## Load scenarios against the real binary and the no-op server, then through real Envoy (wrk); writes e2e/bench/RESULTS.md (~6 min).
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(GO) run ./e2e/bench

bench-go: ## Go benchmarks of the engine and its stages (BENCH_COUNT=6 for several runs to take the median of).
	$(GO) test -run '^$$' -bench . -benchmem -count $(or $(BENCH_COUNT),1) ./authz/...

# Every Fuzz function under authz/ and cmd/, found by name, each run alone
# (the fuzzer uses every core) for FUZZTIME. A crasher is written to the
# package's testdata/fuzz/<FuzzName>/, where `go test` (so `make test`) runs
# it from then on with the checked-in seeds.
FUZZTIME ?= 2m
fuzz: ## Run every fuzz target in turn for FUZZTIME (default 2m).
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' authz cmd | sort); do \
		for name in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "== $$name (./$$(dirname $$f), $(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) ./$$(dirname $$f); \
		done; \
	done

clean:
	rm -rf $(BIN)
