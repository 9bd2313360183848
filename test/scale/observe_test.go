package scale

import "testing"

func TestPprofBytes(t *testing.T) {
	for in, want := range map[string]uint64{"33623.68kB": 34430648, "1.5MB": 3 << 19, "2GB": 2 << 30, "512B": 512, "lots": 0, "xkB": 0} {
		if got := pprofBytes(in); got != want {
			t.Errorf("pprofBytes(%q) = %d, want %d", in, got, want)
		}
	}
}
