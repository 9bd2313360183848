package controlplane

import (
	"context"
	"testing"
)

// StartForTest starts a control plane for one test and stops it when the test
// ends. With -short the test is skipped; a missing binary fails the test with
// the make target that provides it.
func StartForTest(t testing.TB, opts Options) *Env {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real kube-apiserver and etcd; skipped with -short")
	}
	env, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return env
}
