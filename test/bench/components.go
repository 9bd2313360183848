package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/perf/benchfmt"
)

// A Component is one of eddy's own Go benchmarks that `make bench` runs
// beside the classes, so that one run's report holds what eddy costs and
// how fast its parts go next to what it gains (issue 16): each runs with
// `go test` from the checkout, and the report shows the Figures named here.
type Component struct {
	Name string `json:"name"`
	// Package and Benchmark are go test's package and -bench pattern.
	Package   string `json:"package"`
	Benchmark string `json:"benchmark"`
	// Benchtime is go test's -benchtime (the benchmark's documented one).
	Benchtime string   `json:"benchtime"`
	Figures   []Figure `json:"figures"`
}

// A Figure is one reported metric of a benchmark: Bench is its name as go
// test prints it without "Benchmark" and the GOMAXPROCS suffix (with its
// sub-benchmark, if any), Unit the metric's unit.
type Figure struct {
	Bench string `json:"bench"`
	Unit  string `json:"unit"`
	// Label says what the figure is, for the report.
	Label string `json:"label"`
}

// Components are the component benchmarks of make bench, in the order they
// run. Each names its package's benchmark; their doc comments say how
// they measure.
var Components = []Component{
	{
		Name: "collector overhead", Package: "./bpf", Benchmark: "^BenchmarkWorkloads$", Benchtime: "9x",
		Figures: []Figure{
			{"Workloads", "ratio-off2-fio", "fio 4k randread (cached): no eddy measured again (noise), × no eddy"},
			{"Workloads", "ratio-rest-fio", "fio: eddy with nothing to learn on the node, × no eddy"},
			{"Workloads", "ratio-other-fio", "fio: eddy observing another pod, × no eddy"},
			{"Workloads", "ratio-on-fio", "fio: eddy observing this pod, × no eddy"},
			{"Workloads", "ratio-off2-python", "Python 1,500 small cached files: no eddy measured again (noise), × no eddy"},
			{"Workloads", "ratio-rest-python", "Python: eddy with nothing to learn on the node, × no eddy"},
			{"Workloads", "ratio-other-python", "Python: eddy observing another pod, × no eddy"},
			{"Workloads", "ratio-on-python", "Python: eddy observing this pod, × no eddy"},
		},
	},
	{
		Name: "analyzer intake", Package: "./analyzer/service", Benchmark: "^BenchmarkIntake$", Benchtime: "20x",
		Figures: []Figure{
			{"Intake/authenticated", "records/s", "records/s through the real gRPC intake (TLS, TokenReview, admission)"},
			{"Intake/open", "records/s", "records/s with authentication and admission off (the cost of trust)"},
		},
	},
	{
		Name: "webhook", Package: "./webhook", Benchmark: "^BenchmarkPodCreateLatency$", Benchtime: "1x",
		Figures: []Figure{
			{"PodCreateLatency", "p50-ms-without", "pod create p50 ms, namespace not served"},
			{"PodCreateLatency", "p50-ms-with", "pod create p50 ms, served and injected"},
			{"PodCreateLatency", "p99-ms-without", "pod create p99 ms, namespace not served"},
			{"PodCreateLatency", "p99-ms-with", "pod create p99 ms, served and injected"},
			{"PodCreateLatency", "p99-ms-added", "p99 ms the webhook adds"},
		},
	},
	{
		Name: "operator", Package: "./operator", Benchmark: "^BenchmarkConverge$", Benchtime: "1x",
		Figures: []Figure{
			{"Converge", "s-to-converge", "s until 5,000 ScaleCache recommendations on 1,000 datasets are Applied or Superseded"},
			{"Converge", "requests/reconcile", "API requests per reconcile"},
			{"Converge", "MiB-heap-in-use", "operator heap in use after, MiB"},
		},
	},
}

// ComponentResult is what one component's run gave: every metric of its
// benchmarks by Figure key (Bench + " " + Unit), how long it took, and the
// error if it failed (a failed component is reported, not fatal).
type ComponentResult struct {
	Component
	Values  map[string]float64 `json:"values"`
	Seconds float64            `json:"seconds"`
	Err     string             `json:"error,omitempty"`
}

func (f Figure) key() string { return f.Bench + " " + f.Unit }

// RunComponents runs each component's benchmark with go test in the module
// at root, one after another (they measure the machine), appends go test's
// output to raw (the benchmark format, for benchstat) and returns the
// results.
func RunComponents(ctx context.Context, cfg Config, root string, comps []Component, raw io.Writer) []ComponentResult {
	var out []ComponentResult
	for _, c := range comps {
		logf(cfg, "component %s: go test %s -bench %s -benchtime %s", c.Name, c.Package, c.Benchmark, c.Benchtime)
		start := time.Now()
		cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-run", "^$", "-bench", c.Benchmark, "-benchtime", c.Benchtime, "-timeout", "30m", c.Package)
		cmd.Dir = root
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		err := cmd.Run()
		_, _ = raw.Write(buf.Bytes())
		r := ComponentResult{Component: c, Seconds: time.Since(start).Seconds()}
		var perr error
		r.Values, perr = ParseBench(&buf)
		switch {
		case err != nil:
			r.Err = fmt.Sprintf("go test: %v (output in components.txt)", err)
		case perr != nil:
			r.Err = perr.Error()
		default:
			var missing []string
			for _, f := range c.Figures {
				if _, ok := r.Values[f.key()]; !ok {
					missing = append(missing, f.key())
				}
			}
			if len(missing) > 0 {
				r.Err = "not reported (skipped?): " + strings.Join(missing, ", ")
			}
		}
		logf(cfg, "component %s done in %.0fs%s", c.Name, r.Seconds, map[bool]string{true: ": " + r.Err}[r.Err != ""])
		out = append(out, r)
	}
	return out
}

// ParseBench reads go test's benchmark output and returns each metric by
// benchmark name (without "Benchmark" and the GOMAXPROCS suffix) and unit.
func ParseBench(r io.Reader) (map[string]float64, error) {
	values := map[string]float64{}
	br := benchfmt.NewReader(r, "go test")
	for br.Scan() {
		res, ok := br.Result().(*benchfmt.Result)
		if !ok {
			continue
		}
		base, parts := res.Name.Parts()
		name := string(base)
		for _, p := range parts {
			if !strings.HasPrefix(string(p), "-") {
				name += string(p)
			}
		}
		for _, v := range res.Values {
			// As printed: benchfmt converts some units (ns/op to sec/op)
			// and keeps the original beside.
			unit, val := v.OrigUnit, v.OrigValue
			if unit == "" {
				unit, val = v.Unit, v.Value
			}
			values[name+" "+unit] = val
		}
	}
	return values, br.Err()
}

// componentsMarkdown is the report's section of component figures.
func componentsMarkdown(comps []ComponentResult) string {
	if len(comps) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n## Components, same run\n\n")
	b.WriteString("eddy's own benchmarks, run before the classes (go test output in components.txt).\n\n")
	b.WriteString("| component | figure | value |\n|---|---|---:|\n")
	for _, c := range comps {
		if c.Err != "" {
			fmt.Fprintf(&b, "| %s (`%s`, %.0f s) | **failed**: %s | – |\n", c.Name, c.Package, c.Seconds, c.Err)
		}
		for _, f := range c.Figures {
			v, ok := c.Values[f.key()]
			if !ok {
				continue
			}
			fmt.Fprintf(&b, "| %s (`%s`, %.0f s) | %s | %s |\n", c.Name, c.Package, c.Seconds, f.Label, figure(v))
		}
	}
	return b.String()
}

func figure(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
