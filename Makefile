# eddy's build. Every tool is pinned here and built into ./bin from the Go
# module proxy; Debian packages come from hack/install-deps.sh (run by .ci/run).

SHELL := /bin/bash
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

CONTROLLER_GEN_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0
KWOK_VERSION ?= v0.7.0
PROTOC_GEN_GO_VERSION ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.1
# KUBE_VERSION is set by tools/kube/go.mod; the stamp file makes a pin change rebuild.
KUBE_VERSION := $(shell sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$$/\1/p' tools/kube/go.mod)
# Stamp the real version into the binaries: clients (the webhook's native
# sidecar check among them) read it from /version.
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(KUBE_VERSION))) -X k8s.io/component-base/version.gitTreeState=clean

.PHONY: deps bin-tools all build generate generate-go generate-crd generate-proto generate-bpf generate-dashboards test test-short lint vet tools kube-binaries demo clean help

all: build

help: ## Show the targets.
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-16s %s\n",$$1,$$2}'

build: ## Build bin/eddy (and bin/kubectl-eddy, the kubectl plugin), bin/eddy-sidecar (what the webhook injects), bin/eddy-dev (local control plane, demo) and bin/eddy-workload (the demo's reader).
	go build -o $(BIN)/eddy ./cmd/eddy
	go build -o $(BIN)/eddy-sidecar ./cmd/eddy-sidecar
	go build -o $(BIN)/eddy-dev ./cmd/eddy-dev
	ln -sf eddy $(BIN)/kubectl-eddy
	go build -o $(BIN)/eddy-workload ./test/node/cmd/workload

generate: bin-tools generate-proto generate-bpf generate-go generate-crd generate-dashboards ## Regenerate every committed generated file.

generate-go: $(BIN)/controller-gen ## Deepcopy functions for the API types.
	controller-gen object:headerFile=hack/boilerplate.go.txt paths=./api/v1alpha1/...

generate-crd: $(BIN)/controller-gen ## CRD manifests and RBAC into config/.
	controller-gen crd:allowDangerousTypes=true paths=./api/v1alpha1/... output:crd:artifacts:config=config/crd

generate-dashboards: ## Grafana dashboards (dashboards/json) and the prometheus-operator manifests built from dashboards/ (Grafana Foundation SDK).
	go run ./dashboards/gen

generate-proto: $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## Go code for the collector→analyzer protocol.
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler (or run hack/install-deps.sh)" >&2; exit 1; }
	protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative api/access/v1/access.proto

generate-bpf: ## bpf2go output for the kernel programs (needs clang, libbpf-dev).
	@command -v clang >/dev/null || { echo "clang not found: apt-get install clang llvm libbpf-dev (or run hack/install-deps.sh)" >&2; exit 1; }
	@if ls bpf/*.go >/dev/null 2>&1; then go generate ./bpf/...; fi

vet: ## go vet.
	go vet ./...

lint: $(BIN)/golangci-lint ## golangci-lint with the repository's config.
	golangci-lint run ./...

deps: ## Install missing Debian packages (root; see hack/install-deps.sh).
	hack/install-deps.sh

test: deps tools ## All tests, with set-up: unit, kernel (as root), real control plane.
	# -p 1: the real-node test runs a kubelet, which treats the pod cgroups
	# other tests simulate under kubepods/ as orphans and removes them.
	go test -count=1 -p 1 -timeout 60m ./...

test-short: ## Unit tests only (no control plane, no kernel).
	go test -short ./...

tools: $(BIN)/kube-apiserver $(BIN)/etcd $(BIN)/kubectl $(BIN)/kwok ## Everything tests need in bin/.

bin-tools: $(BIN)/controller-gen $(BIN)/golangci-lint $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## Code generators and linter.

kube-binaries: $(BIN)/kube-apiserver ## Build the pinned control plane into bin/.

$(BIN)/.kube-$(KUBE_VERSION):
	@mkdir -p $(BIN)
	@echo "building kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy $(KUBE_VERSION) (cold: ~5-10 min)"
	cd tools/kube && GOBIN=$(BIN) go install -ldflags "$(KUBE_LDFLAGS)" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
	rm -f $(BIN)/.kube-v*; touch $@

$(BIN)/kube-apiserver: $(BIN)/.kube-$(KUBE_VERSION)
	@test -x $@ && touch $@

$(BIN)/etcd:
	@mkdir -p $(BIN)
	@test -x /usr/bin/etcd || { echo "etcd not found: apt-get install etcd-server (or run hack/install-deps.sh)" >&2; exit 1; }
	ln -sf /usr/bin/etcd $@

$(BIN)/kubectl:
	@mkdir -p $(BIN)
	@if command -v kubectl >/dev/null && [ "$$(command -v kubectl)" != "$@" ]; then ln -sf "$$(command -v kubectl)" $@; \
	else cd tools/kube && GOBIN=$(BIN) go install k8s.io/kubernetes/cmd/kubectl; fi

$(BIN)/kwok:
	GOBIN=$(BIN) go install sigs.k8s.io/kwok/cmd/kwok@$(KWOK_VERSION)

$(BIN)/controller-gen:
	GOBIN=$(BIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)

$(BIN)/golangci-lint:
	GOBIN=$(BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

demo: deps build tools node-binaries ## The whole loop on real pods of this machine's kubelet (root; see README). eddy-dev demo --no-node runs it without a kubelet.
	$(BIN)/eddy-dev demo

clean:
	rm -rf $(BIN)

# --- real node ---
# A kubelet, containerd and kube-proxy beside the control plane (test/node).
CLUSTER_DIR ?= /tmp/eddy-cluster
COREDNS_VERSION ?= v1.14.7

.PHONY: node-binaries images cluster cluster-down test-node bench bench-scale

node-binaries: $(BIN)/kubelet $(BIN)/kube-proxy $(BIN)/coredns ## kubelet, kube-proxy (pinned module) and CoreDNS into bin/.

$(BIN)/kubelet: $(BIN)/.kube-$(KUBE_VERSION)
	@test -x $@ || { cd tools/kube && GOBIN=$(BIN) go install -ldflags "$(KUBE_LDFLAGS)" k8s.io/kubernetes/cmd/kubelet; }
	@touch $@

$(BIN)/kube-proxy: $(BIN)/.kube-$(KUBE_VERSION)
	@test -x $@ || { cd tools/kube && GOBIN=$(BIN) go install -ldflags "$(KUBE_LDFLAGS)" k8s.io/kubernetes/cmd/kube-proxy; }
	@touch $@

$(BIN)/coredns:
	@mkdir -p $(BIN)
	GOBIN=$(BIN) go install github.com/coredns/coredns@$(COREDNS_VERSION)

$(BIN)/eddy-cluster: FORCE
	go build -o $@ ./test/node/cmd/eddy-cluster

images: $(BIN)/eddy-cluster ## Image tarballs (eddy, pause, workload) into bin/images; only changed ones are rewritten.
	$(BIN)/eddy-cluster images --out $(BIN)/images

cluster: deps tools node-binaries $(BIN)/eddy-cluster ## Control plane + a real node (containerd, kubelet, kube-proxy, CoreDNS) + 2 kwok nodes, with eddy installed from config/ as pods.
	$(BIN)/eddy-cluster up --dir $(CLUSTER_DIR)

cluster-down: $(BIN)/eddy-cluster ## Stop `make cluster` and check nothing is left behind.
	$(BIN)/eddy-cluster down --dir $(CLUSTER_DIR)

bench: deps tools node-binaries build ## eddy against no prefetch, Fluid's prefetcher, a 16-reader warm-up and an oracle, on real pods (root); report in docs/bench.
	flock /tmp/eddy-realnode.lock $(BIN)/eddy-dev bench --components --out docs/bench

bench-scale: tools build ## Scale benchmark (issue 19): kwok nodes, a real API server, eddy's analyzer, webhook and operator binaries, a collector identity per node; report in docs/bench/scale. EDDY_SCALE=full for 2,000 workloads × 1,000 nodes.
	flock /tmp/eddy-realnode.lock env EDDY_SCALE_REPORT=$(CURDIR)/docs/bench/scale go test -count=1 -run '^$$' -bench Scale -benchtime 1x -timeout 120m ./test/scale/

test-node: deps tools node-binaries ## The real-node test (root).
	go test -count=1 -v -timeout 20m ./test/node/...

FORCE:
