package prefetch

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eddy-autotune/eddy/sdk"
)

// trainScript is the benchmark's PyTorch training loop (ShuffledEpochs).
var trainScript = filepath.Join("..", "test", "node", "workload", "train.py")

// TestSDKHintsMatchTheTrainingLoop holds the SDK to its contract with the
// benchmark's own training loop (train.py: a seeded generator, batches of
// 8, two worker processes, three epochs): each epoch, what the injected SDK
// sends the prefetcher's hint socket is exactly the order the loop then
// reads, and the loop reads the orders it reads without the SDK.
func TestSDKHintsMatchTheTrainingLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PyTorch twice; skipped with -short")
	}
	if out, err := exec.Command("/usr/bin/python3", "-c", "import torch").CombinedOutput(); err != nil {
		t.Skipf("PyTorch is not importable by /usr/bin/python3 (hack/install-deps.sh installs python3-torch): %v: %s", err, strings.TrimSpace(string(out)))
	}
	data := t.TempDir()
	makeDataset(t, data, 40, 4<<10)
	sdkDir := t.TempDir()
	require.NoError(t, sdk.Install(sdkDir))
	sock := filepath.Join(sdkDir, HintSocketName)

	var mu sync.Mutex
	var hints []Hint
	srv, err := listenHints(sock, testr.New(t), func(h Hint) {
		mu.Lock()
		defer mu.Unlock()
		hints = append(hints, h)
	})
	require.NoError(t, err)
	go srv.serve()
	defer srv.Close()

	// run returns the epochs' orders train.py logs, as paths under data.
	run := func(socket string) [][]string {
		cmd := exec.Command("/usr/bin/python3", trainScript, "--dir", data, "--epochs", "3", "--batch-size", "8",
			"--workers", "2", "--compute", "0", "--seed", "7", "--log-order")
		cmd.Env = append(os.Environ(), "PYTHONPATH="+sdk.PythonPath(sdkDir), "EDDY_PREFETCH_SOCKET="+socket,
			"PYTHONDONTWRITEBYTECODE=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, "train.py: %s\n%s", out, stderr.String())
		var orders [][]string
		for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
			var e struct{ Files []string }
			if json.Unmarshal([]byte(l), &e) == nil && e.Files != nil {
				var abs []string
				for _, f := range e.Files {
					abs = append(abs, filepath.Join(data, f))
				}
				orders = append(orders, abs)
			}
		}
		require.Len(t, orders, 3, "train.py --log-order wrote one order per epoch: %s", stderr.String())
		return orders
	}

	without := run(filepath.Join(sdkDir, "absent.sock"))
	with := run(sock)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(hints) >= 3 }, 10*time.Second, 20*time.Millisecond,
		"the SDK sent a hint per epoch")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, hints, 3, "one hint per epoch")
	for e := range with {
		assert.Equal(t, with[e], hints[e].Files, "epoch %d: the hinted order is the order the loop read", e)
		if e > 0 {
			assert.Greater(t, hints[e].Epoch, hints[e-1].Epoch, "hints' epochs increase")
		}
	}
	assert.Equal(t, without, with, "the loop reads the same orders with the SDK as without")
}
