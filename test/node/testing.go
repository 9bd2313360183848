package node

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// SkipUnlessAvailable skips t when a real node cannot run here: in -short
// mode, without root, or without the host programs Preflight looks for
// (with rclone and fuse3 when remoteDatasets). Any other preflight error
// fails t. It also silences controller-runtime's logger, which clients of
// the cluster would otherwise complain about.
func SkipUnlessAvailable(t testing.TB, remoteDatasets bool) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts containerd, a kubelet and a control plane; skipped with -short")
	}
	if err := Preflight("", remoteDatasets); err != nil {
		var missing *MissingHostProgramsError
		if errors.Is(err, ErrNotRoot) || errors.As(err, &missing) {
			t.Skipf("cannot run a real node here: %v", err)
		}
		t.Fatal(err)
	}
	ctrllog.SetLogger(logr.Discard())
}

// TestLog returns a writer for Options.Log that logs each line through t.
func TestLog(t testing.TB) io.Writer { return testLog{t} }

type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
