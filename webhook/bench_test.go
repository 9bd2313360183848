package webhook

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// BenchmarkPodCreateLatency measures what the mutating webhook adds to pod
// creation through a real API server: pods are created open-loop at a steady
// rate (each create starts on its tick, so a slow one does not delay the
// next), alternating pods in a namespace the webhook serves (a
// recommendation applies: every pod is injected) and in one it does not
// (the namespaceSelector keeps the API server from calling it), so both
// arms see the same machine. It reports p50 and p99 of each arm and the p99
// added. Run it once:
//
//	go test ./webhook -run '^$' -bench PodCreateLatency -benchtime 1x
//
// EDDY_BENCH_RATE (creates per second over both arms, default 100) and
// EDDY_BENCH_PODS (pods per arm, default 1000) change the load;
// EDDY_BENCH_NO_RECOMMENDATION=1 leaves the webhook nothing to inject, which
// separates the cost of calling it from the cost of the injection.
func BenchmarkPodCreateLatency(b *testing.B) {
	rate := envInt("EDDY_BENCH_RATE", 100)
	perArm := envInt("EDDY_BENCH_PODS", 1000)
	// Arms alternate pod by pod, so bursts from whatever else runs on the
	// machine hit both alike.
	const block, warmup = 1, 50

	h := startHarness(b, nil)
	mustCreate(b, h.c, namespace("with", true))
	mustCreate(b, h.c, namespace("without", false))
	inject := os.Getenv("EDDY_BENCH_NO_RECOMMENDATION") != "1"
	if inject {
		h.createApplied(b, prefetchRec("with", "web.imagenet.prefetch", "web", "imagenet"))
	}
	ctx := context.Background()

	loadBefore := loadAverage()
	var mu sync.Mutex
	lat := map[string][]time.Duration{}
	var failed, notInjected int
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	b.ResetTimer()
	for i := range 2 * perArm {
		arm := "without"
		if (i/block)%2 == 1 {
			arm = "with"
		}
		<-tick.C
		wg.Add(1)
		go func(i int, arm string) {
			defer wg.Done()
			pod := testPod(arm, "web-", "web", "imagenet")
			start := time.Now()
			err := h.c.Create(ctx, pod)
			d := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			if inject && arm == "with" && pod.Annotations[eddyv1alpha1.InjectedAnnotation] == "" {
				notInjected++
			}
			if i >= warmup {
				lat[arm] = append(lat[arm], d)
			}
		}(i, arm)
	}
	wg.Wait()
	b.StopTimer()

	p := func(arm string, q float64) time.Duration {
		l := lat[arm]
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		if len(l) == 0 {
			return 0
		}
		return l[min(len(l)-1, int(q*float64(len(l))))]
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	added := p("with", 0.99) - p("without", 0.99)
	b.Logf("pod create latency at %d creates/s, %d pods per arm (alternating in blocks of %d, first %d discarded), injecting %v, failed %d, not injected %d; load average %s (before: %s)",
		rate, perArm, block, warmup, inject, failed, notInjected, loadAverage(), loadBefore)
	b.Logf("%-16s %8s %8s %8s %8s", "", "p50", "p90", "p99", "max")
	for _, arm := range []string{"without", "with"} {
		b.Logf("%-16s %8.2f %8.2f %8.2f %8.2f  ms (%d samples)", arm+" webhook", ms(p(arm, 0.5)), ms(p(arm, 0.9)), ms(p(arm, 0.99)), ms(p(arm, 1)), len(lat[arm]))
	}
	b.Logf("added by the webhook: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms (goal ≤ 5 ms at p99); webhook handler: mean %s",
		ms(p("with", 0.5)-p("without", 0.5)), ms(p("with", 0.9)-p("without", 0.9)), ms(added), handlerMean(h.srv))
	b.ReportMetric(ms(p("without", 0.5)), "p50-ms-without")
	b.ReportMetric(ms(p("without", 0.99)), "p99-ms-without")
	b.ReportMetric(ms(p("with", 0.5)), "p50-ms-with")
	b.ReportMetric(ms(p("with", 0.99)), "p99-ms-with")
	b.ReportMetric(ms(added), "p99-ms-added")
	if failed > 0 || notInjected > 0 {
		b.Errorf("%d creates failed and %d pods were not injected", failed, notInjected)
	}
}

// handlerMean is the mean time the inject handler took and the histogram
// bucket its p99 falls in, from eddy_webhook_request_duration_seconds.
func handlerMean(s *Server) string {
	m := &dto.Metric{}
	if err := s.Metrics.Duration.WithLabelValues("inject").(interface{ Write(*dto.Metric) error }).Write(m); err != nil {
		return "unknown"
	}
	h := m.GetHistogram()
	if h.GetSampleCount() == 0 {
		return "no samples"
	}
	mean := time.Duration(h.GetSampleSum() / float64(h.GetSampleCount()) * float64(time.Second)).Round(time.Microsecond)
	p99 := "above the last bucket"
	for _, b := range h.GetBucket() {
		if float64(b.GetCumulativeCount()) >= 0.99*float64(h.GetSampleCount()) {
			p99 = fmt.Sprintf("≤ %s", time.Duration(b.GetUpperBound()*float64(time.Second)))
			break
		}
	}
	return fmt.Sprintf("%s, p99 %s", mean, p99)
}

// loadAverage is /proc/loadavg's first three fields: the benchmark shares
// its machine, and the numbers mean little without it.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkMutate is the mutator alone on a typical pod with a prefetch and
// an SDK recommendation.
func BenchmarkMutate(b *testing.B) {
	c := loadGoldenCase(b, "testdata/golden/prefetch-and-sdk.in.yaml")
	cfg := goldenConfig(true)
	w := resolveOffline(&c.Pod, c.Namespace)
	in := Input{Pod: &c.Pod, Namespace: c.Namespace, NamespaceLabels: c.NamespaceLabels, Workload: w, Recommendations: c.Recommendations, Policy: c.Policy}
	b.ReportAllocs()
	for b.Loop() {
		if res := Mutate(in, cfg); !res.Changed() {
			b.Fatal("not injected")
		}
	}
}
