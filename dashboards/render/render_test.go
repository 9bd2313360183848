package render_test

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eddy-autotune/eddy/dashboards"
	"github.com/eddy-autotune/eddy/dashboards/render"
)

// TestPNG draws every dashboard, half of its queries with a series and half
// without, into a PNG that decodes to the expected size.
func TestPNG(t *testing.T) {
	now := time.Now()
	data := func(p, q int) []render.Series {
		if (p+q)%2 == 1 {
			return nil
		}
		s := render.Series{Labels: map[string]string{"namespace": "ml", "workload": "train", "pod": "train-1"}}
		for i := range 30 {
			s.Times = append(s.Times, now.Add(time.Duration(i)*10*time.Second))
			s.Values = append(s.Values, float64(i%7)/7)
		}
		return []render.Series{s}
	}
	for _, d := range dashboards.Dashboards() {
		path := filepath.Join(t.TempDir(), d.UID+".png")
		require.NoError(t, render.PNG(d, data, path))
		f, err := os.Open(path)
		require.NoError(t, err)
		cfg, err := png.DecodeConfig(f)
		f.Close()
		require.NoError(t, err)
		rows := (len(d.Panels()) + 2) / 3
		require.Equal(t, 3*6*96, cfg.Width, d.UID)
		require.InDelta(t, float64(rows)*3.6*96, float64(cfg.Height), 1, d.UID)
	}
}
