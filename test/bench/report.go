package bench

import (
	"fmt"
	"image/color"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

func job(s Sample) float64   { return s.Job }
func total(s Sample) float64 { return s.Total }
func mib(s Sample) float64   { return float64(s.Remote.Bytes) / (1 << 20) }
func gets(s Sample) float64  { return float64(s.Remote.Gets) }

// StallRemoved is the share of the data stall an arm removed,
// (cold − arm)/(cold − oracle), on the times f picks; NaN-free: 0 when the
// class has no stall to remove or lacks cold or oracle.
func StallRemoved(results []Result, class string, arm Arm, f func(Sample) float64) (float64, bool) {
	var cold, oracle, this *Result
	for i := range results {
		r := &results[i]
		if r.Class != class || len(r.Samples) == 0 {
			continue
		}
		switch r.Arm {
		case ArmCold:
			cold = r
		case ArmOracle:
			oracle = r
		}
		if r.Arm == arm {
			this = r
		}
	}
	if cold == nil || oracle == nil || this == nil {
		return 0, false
	}
	stall := cold.Median(f) - oracle.Median(f)
	if stall <= 0 {
		return 0, false
	}
	return (cold.Median(f) - this.Median(f)) / stall, true
}

// Markdown renders one table per class: job time, time counting warm-up
// (median ± spread), when the job's program started (from the Job's
// creation: the Job controller, warm-ups that hold the job, the kubelet's
// own start-up) and its own start-up before the loop, the share of stall
// removed on each, and what the remote served.
func Markdown(cfg Config, results []Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Remote: %s one-way latency, %.0f MiB/s, FUSE cache bound %s; %d run(s) per arm (median, ± spread).\n",
		cfg.Latency, float64(cfg.Bandwidth)/(1<<20), cfg.CacheMaxSize, max(cfg.Repeats, 1))
	for _, class := range cfg.Classes {
		fmt.Fprintf(&b, "\n### %s — %s (%.1f MiB", class.Name, class.Describe(), float64(class.Bytes())/(1<<20))
		if class.CacheMaxSize != "" {
			fmt.Fprintf(&b, "; FUSE cache bound %s", class.CacheMaxSize)
		}
		b.WriteString(")\n\n")
		b.WriteString("| arm | job s | job + warm-up s | program started s | its start-up s | stall removed (job) | stall removed (with warm-up) | remote MiB | remote GETs | note |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, r := range results {
			if r.Class != class.Name {
				continue
			}
			if len(r.Samples) == 0 {
				fmt.Fprintf(&b, "| %s | – | – | – | – | – | – | – | – | %s |\n", r.Arm, r.Note)
				continue
			}
			sj, okj := StallRemoved(results, class.Name, r.Arm, job)
			st, okt := StallRemoved(results, class.Name, r.Arm, total)
			fmt.Fprintf(&b, "| %s | %.2f ± %.2f | %.2f ± %.2f | %.2f | %.2f | %s | %s | %.1f | %.0f | %s |\n", r.Arm,
				r.Median(job), r.Spread(job), r.Median(total), r.Spread(total), r.Median(func(s Sample) float64 { return s.Start }),
				r.Median(Sample.StartUp),
				pct(sj, okj), pct(st, okt), r.Median(mib), r.Median(gets), r.Note)
		}
	}
	return b.String()
}

func pct(x float64, ok bool) string {
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.2f", x)
}

// Chart draws the time counting warm-up of each arm, grouped by class, as
// a PNG at path.
func Chart(cfg Config, results []Result, path string) error {
	p := plot.New()
	p.Title.Text = "Job time counting warm-up (s), by class and arm; lower is better"
	p.Y.Label.Text = "seconds"
	names := make([]string, len(cfg.Classes))
	for i, c := range cfg.Classes {
		names[i] = c.Name
	}
	w := vg.Points(12)
	palette := []color.Color{
		color.RGBA{0x99, 0x99, 0x99, 0xff}, color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xae, 0xc7, 0xe8, 0xff},
		color.RGBA{0xff, 0x7f, 0x0e, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, color.RGBA{0x00, 0x00, 0x00, 0xff},
	}
	for i, arm := range cfg.Arms {
		vals := make(plotter.Values, len(cfg.Classes))
		for j, c := range cfg.Classes {
			for _, r := range results {
				if r.Class == c.Name && r.Arm == arm {
					vals[j] = r.Median(total)
				}
			}
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		bars.LineStyle.Width = 0
		bars.Color = palette[i%len(palette)]
		bars.Offset = w * vg.Length(float64(i)-float64(len(cfg.Arms)-1)/2)
		p.Add(bars)
		p.Legend.Add(string(arm), bars)
	}
	p.Legend.Top = true
	p.NominalX(names...)
	return p.Save(vg.Length(110*len(cfg.Classes)+200), 4*vg.Inch, path)
}
