package scale_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/eddy-autotune/eddy/test/scale"
)

// BenchmarkScale runs the scale benchmark once at the size SizeFromEnv
// gives (small by default; EDDY_SCALE=full is issue 19's) and prints its
// report; with EDDY_SCALE_REPORT=DIR it writes it to DIR/report-<size>.md. It
// needs bin/eddy (make build) and the control plane (make tools):
//
//	go test -run '^$' -bench Scale -benchtime 1x -timeout 60m ./test/scale/
//
// It fails when the run itself is broken (nothing accepted, no profile,
// the operator applied nothing), not when a goal is missed: the report says
// which are.
func BenchmarkScale(b *testing.B) {
	if b.N > 1 {
		b.Skip("one run is the measurement: -benchtime 1x")
	}
	size, err := scale.SizeFromEnv()
	require.NoError(b, err)
	ctrllog.SetLogger(logr.Discard())
	root, err := filepath.Abs("../..")
	require.NoError(b, err)
	dir := filepath.Join(os.TempDir(), "eddy-scale")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Minute)
	defer cancel()
	res, err := scale.Run(ctx, scale.Options{Size: size, EddyBin: filepath.Join(root, "bin", "eddy"), Dir: dir, Log: os.Stdout})
	require.NoError(b, err, "logs in %s", dir)
	command := map[string]string{"small": "make bench-scale", "full": "EDDY_SCALE=full make bench-scale"}[size.Name]
	if command == "" {
		var env []string
		for _, kv := range os.Environ() {
			if strings.HasPrefix(kv, "EDDY_SCALE") && !strings.HasPrefix(kv, "EDDY_SCALE_REPORT=") {
				env = append(env, kv)
			}
		}
		sort.Strings(env)
		command = strings.Join(append(env, "make bench-scale"), " ")
	}
	report := scale.Markdown(res, command)
	os.Stdout.WriteString("\n" + report)
	if out := os.Getenv("EDDY_SCALE_REPORT"); out != "" {
		require.NoError(b, os.MkdirAll(out, 0o755))
		require.NoError(b, os.WriteFile(filepath.Join(out, "report-"+size.Name+".md"), []byte(report), 0o644))
		require.NoError(b, scale.Chart(res, filepath.Join(out, "chart-"+size.Name+".png")))
	}
	b.ReportMetric(res.AcceptedPerSecond, "records/s")
	b.ReportMetric(res.DuplicateShare(), "duplicate-share")
	b.ReportMetric(res.FlushMax.Seconds(), "max-flush-s")
	b.ReportMetric(res.LeaseMaxAge.Seconds(), "max-lease-age-s")
	whole, _ := res.AnalyzerPerWorkload()
	b.ReportMetric(whole/1024, "analyzer-KiB/workload")
	require.Positive(b, res.AcceptedPerSecond, "the analyzer accepted nothing")
	require.Positive(b, res.Profiles, "no AccessProfile was written")
	require.Positive(b, res.OperatorApplied, "the operator applied nothing")
}
