// Package render draws a dashboard's panels from query results into one PNG
// (gonum.org/v1/plot), so that a reader sees what the dashboards show
// without a Grafana.
package render

import (
	"fmt"
	"image/color"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/eddy-autotune/eddy/dashboards"
)

// Series is one series a panel query returned.
type Series struct {
	Labels map[string]string
	Times  []time.Time
	Values []float64
}

// Data returns the series of query q of panel p (indexes into
// Dashboard.Panels and Panel.Queries).
type Data func(p, q int) []Series

// maxSeries bounds the lines (and legend entries) of one panel.
const maxSeries = 6

// PNG draws d's panels, three to a row, each with the series data returns,
// into a PNG file at path.
func PNG(d dashboards.Dashboard, data Data, path string) error {
	panels := d.Panels()
	const cols = 3
	rows := (len(panels) + cols - 1) / cols
	const w, h = 6 * vg.Inch, 3.6 * vg.Inch
	img := vgimg.New(w*cols, h*vg.Length(rows))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter, PadY: vg.Millimeter,
		PadTop: vg.Millimeter, PadBottom: vg.Millimeter, PadLeft: vg.Millimeter, PadRight: vg.Millimeter}
	for i, p := range panels {
		pl, err := panelPlot(p, func(q int) []Series { return data(i, q) })
		if err != nil {
			return fmt.Errorf("%s/%s: %w", d.UID, p.Title, err)
		}
		pl.Draw(tiles.At(dc, i%cols, i/cols))
	}
	return savePNG(img, path)
}

func panelPlot(p dashboards.Panel, data func(q int) []Series) (*plot.Plot, error) {
	pl := plot.New()
	scale, unit := unitScale(p.Unit)
	pl.Title.Text = p.Title
	pl.Y.Label.Text = unit
	pl.X.Tick.Marker = plot.TimeTicks{Format: "15:04"}
	pl.Legend.Top = true
	pl.Legend.TextStyle.Font.Size = vg.Points(7)
	pl.BackgroundColor = color.White
	n := 0
	for q, query := range p.Queries {
		series := data(q)
		sort.Slice(series, func(i, j int) bool {
			return legend(query.Legend, series[i].Labels) < legend(query.Legend, series[j].Labels)
		})
		for _, s := range series {
			if n == maxSeries || len(s.Values) == 0 {
				continue
			}
			pts := make(plotter.XYs, 0, len(s.Values))
			for k, v := range s.Values {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					continue // a ratio of zero rates: Grafana leaves a gap too
				}
				pts = append(pts, plotter.XY{X: float64(s.Times[k].Unix()), Y: v * scale})
			}
			if len(pts) == 0 {
				continue
			}
			line, err := plotter.NewLine(pts)
			if err != nil {
				return nil, err
			}
			line.Color = plotutil.Color(n)
			line.Width = vg.Points(1.5)
			pl.Add(line)
			if len(pts) == 1 {
				sc, err := plotter.NewScatter(pts)
				if err != nil {
					return nil, err
				}
				sc.Color = line.Color
				pl.Add(sc)
			}
			pl.Legend.Add(truncate(legend(query.Legend, s.Labels), 48), line)
			n++
		}
	}
	if n == 0 {
		pl.Title.Text += " (no data)"
	}
	pl.Y.Min = 0
	pl.Add(plotter.NewGrid())
	return pl, nil
}

var legendVar = regexp.MustCompile(`\{\{\s*([a-zA-Z_]+)\s*\}\}`)

// legend fills a Grafana legend format with a series' labels.
func legend(format string, labels map[string]string) string {
	if format == "" {
		return fmt.Sprint(labels)
	}
	return strings.TrimSpace(legendVar.ReplaceAllStringFunc(format, func(m string) string {
		return labels[legendVar.FindStringSubmatch(m)[1]]
	}))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// unitScale maps a Grafana unit to a factor and an axis label.
func unitScale(unit string) (float64, string) {
	switch unit {
	case "percentunit":
		return 100, "%"
	case "bytes":
		return 1.0 / (1 << 20), "MiB"
	case "Bps":
		return 1.0 / (1 << 20), "MiB/s"
	case "s":
		return 1, "seconds"
	}
	return 1, ""
}
