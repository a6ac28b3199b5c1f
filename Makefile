# The two commands of the README:
#   make run    install what is missing, build, and start `sandboxapi dev`
#   make test   the same set-up, then the whole test suite (what CI runs)

BIN        := bin
GO         ?= go
LISTEN     ?= 127.0.0.1:8080
DATA_DIR   ?= data
TEST_FLAGS ?= -count=1 -timeout 20m

.PHONY: run test build runsc toolchains host check vet clean

run: build host
	$(BIN)/sandboxapi dev --listen $(LISTEN) --data-dir $(DATA_DIR)

test: build vet
	$(GO) test $(TEST_FLAGS) ./...

build: toolchains runsc
	CGO_ENABLED=0 $(GO) build -o $(BIN)/sandbox-init ./cmd/sandbox-init
	$(GO) build -buildvcs=auto -o $(BIN)/sandboxapi ./cmd/sandboxapi

runsc:
	ops/install/runsc.sh $(BIN)/runsc

toolchains:
	ops/install/toolchains.sh

host:
	ops/install/host.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo 'gofmt: files above need formatting'; exit 1; }
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
