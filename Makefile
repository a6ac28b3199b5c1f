# The two commands of the README:
#   make run    install what is missing, build, and start `sandboxapi dev`
#   make test   the same set-up, then the whole test suite (what CI runs)

BIN        := bin
GO         ?= go
LISTEN     ?= 127.0.0.1:8080
DATA_DIR   ?= data
# The host's language caches (Go's standard library, the TypeScript
# snapshot), shared by every service and test on it; see the README.
CACHE_DIR  ?= /var/cache/sandboxapi
TEST_FLAGS ?= -count=1 -timeout 30m
# The default package cache's time budget; CI builds only the essentials.
PKGCACHE_BUDGET ?= 15m
PKGCACHE_FLAGS  ?= --budget $(PKGCACHE_BUDGET) $(if $(filter true,$(CI)),--small)
FUZZTIME   ?= 10m

.PHONY: run test build runsc toolchains host check vet clean fuzz soak

run: build host
	$(BIN)/sandboxapi dev --listen $(LISTEN) --data-dir $(DATA_DIR) --cache-dir $(CACHE_DIR)

test: build vet
	$(GO) test $(TEST_FLAGS) ./...

# The playground's bundle (esbuild, from the npm clients' CodeMirror) is
# built before the binary that embeds it (docs/playground.md). The last
# steps build the language caches, which take a minute the first
# time on a host (cell/node/DESIGN.md) and nothing after, and the default
# package cache (sandboxes/pkgcache/DESIGN.md), a few minutes the first
# time and nothing after: set-up, not the service's first start. -buildvcs=auto: `sandboxapi version` names the
# commit even where GOFLAGS turns stamping off.
build: toolchains runsc
	CGO_ENABLED=0 $(GO) build -o $(BIN)/sandbox-init ./cmd/sandbox-init
	$(GO) run ./caddy-modules/playground/bundle
	$(GO) build -buildvcs=auto -o $(BIN)/sandboxapi ./cmd/sandboxapi
	$(BIN)/sandboxapi prepare --cache-dir $(CACHE_DIR)
	$(BIN)/sandboxapi pkgcache build --defaults --install-libs --dir $(CACHE_DIR)/pkgcache $(PKGCACHE_FLAGS)

# Fuzzes every request and protocol decoder for FUZZTIME each; `make test`
# runs their seed corpora only (ops/fuzz/run.sh).
fuzz:
	ops/fuzz/run.sh $(FUZZTIME)

# 10,000 mixed requests through every door against the service `make run`
# started on LISTEN and DATA_DIR, from its dev account and a second account
# made for the run; exits non-zero on a 5xx, a 503 without Retry-After, a
# wrong answer or anything left on the host (ops/soak).
soak: build
	key2=$$($(BIN)/sandboxapi admin accounts create --plan mega --data-dir $(DATA_DIR) | sed -n 's/.*"api_key": *"\([^"]*\)".*/\1/p'); \
	$(GO) run ./ops/soak/cmd/soak -url http://$(LISTEN) -key "$$(cat $(DATA_DIR)/dev-key)" -key2 "$$key2" -data-dir $(DATA_DIR)

runsc:
	ops/install/runsc.sh $(BIN)/runsc

# The toolchains, then the npm clients the tests run (ops/clients), with
# the npm the first installs.
toolchains:
	ops/install/toolchains.sh
	ops/install/clients.sh
	ops/install/stripe-mock.sh $(BIN)/stripe-mock

host:
	ops/install/host.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo 'gofmt: files above need formatting'; exit 1; }
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
