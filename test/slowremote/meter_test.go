package slowremote

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestMeterCounts checks that the meter passes responses through unchanged
// and counts requests, GETs and body bytes.
func TestMeterCounts(t *testing.T) {
	body := strings.Repeat("x", 100_000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) }))
	defer srv.Close()
	m, err := StartMeter("127.0.0.1:0", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	before := m.Counts()
	for i := 0; i < 3; i++ {
		resp, err := http.Get("http://" + m.Addr() + "/f")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != body {
			t.Fatalf("body through the meter: %d bytes, want %d", len(got), len(body))
		}
	}
	resp, err := http.Head("http://" + m.Addr() + "/f")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := m.Counts().Sub(before)
	want := MeterCounts{Requests: 4, Gets: 3, Bytes: 300_000}
	if got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
}
