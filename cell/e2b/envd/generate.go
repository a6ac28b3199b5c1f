// Package envd holds the Go code generated from the envd protocol of E2B's
// sandboxes (proto/, from the e2b SDK's own descriptors): the messages and
// the Connect handlers the E2B door serves. Regenerate with go generate
// (needs protoc, protoc-gen-go and protoc-gen-connect-go on PATH).
package envd

//go:generate protoc -I proto --go_out=. --go_opt=module=github.com/sandboxapi/sandboxapi/cell/e2b/envd --connect-go_out=. --connect-go_opt=module=github.com/sandboxapi/sandboxapi/cell/e2b/envd process/process.proto filesystem/filesystem.proto
