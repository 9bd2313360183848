package scale

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Chart draws the measured seconds as a PNG at path: records/s offered and
// accepted above; the heartbeat Lease's age and flush durations below.
func Chart(r *Result, path string) error {
	var offered, accepted, lease, flush plotter.XYs
	for _, p := range r.Series {
		t := p.T.Seconds()
		offered = append(offered, plotter.XY{X: t, Y: p.Offered})
		accepted = append(accepted, plotter.XY{X: t, Y: p.Accepted})
		lease = append(lease, plotter.XY{X: t, Y: p.LeaseAge.Seconds()})
		if p.Flush > 0 {
			flush = append(flush, plotter.XY{X: t, Y: p.Flush.Seconds()})
		}
	}
	top := plot.New()
	top.Title.Text = fmt.Sprintf("eddy at scale (%s: %d workloads, %d nodes, %s windows)", r.Size.Name, r.Size.Workloads, r.Size.Nodes, r.Size.Interval)
	top.Y.Label.Text = "records/s"
	bottom := plot.New()
	bottom.X.Label.Text = "seconds measured"
	bottom.Y.Label.Text = "seconds"
	blue, orange, gray, green := color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xff, 0x7f, 0x0e, 0xff}, color.RGBA{0x99, 0x99, 0x99, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff}
	for _, l := range []struct {
		p     *plot.Plot
		name  string
		xys   plotter.XYs
		color color.Color
	}{
		{top, "offered (collectors)", offered, gray},
		{top, "accepted (analyzer)", accepted, blue},
		{bottom, "heartbeat Lease age", lease, orange},
	} {
		line, err := plotter.NewLine(l.xys)
		if err != nil {
			return err
		}
		line.Color = l.color
		l.p.Add(line)
		l.p.Legend.Add(l.name, line)
	}
	if len(flush) > 0 {
		sc, err := plotter.NewScatter(flush)
		if err != nil {
			return err
		}
		sc.Color = green
		bottom.Add(sc)
		bottom.Legend.Add("flush duration (completed then)", sc)
	}
	top.Legend.Top, bottom.Legend.Top = true, true
	top.Y.Min, bottom.Y.Min = 0, 0
	img := vgimg.New(9*vg.Inch, 6*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadY: vg.Points(10), PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8)}
	canvases := plot.Align([][]*plot.Plot{{top}, {bottom}}, tiles, dc)
	top.Draw(canvases[0][0])
	bottom.Draw(canvases[1][0])
	return savePNG(img, path)
}

func savePNG(img *vgimg.Canvas, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
