//go:build tools

package bpf

// bpf2go is run by the go:generate line in loader.go. Importing it here under
// a tag nobody builds with keeps it, and its go.sum entries, in the module
// when `go mod tidy` runs, so `make generate-bpf` works in a fresh checkout.
import _ "github.com/cilium/ebpf/cmd/bpf2go"
