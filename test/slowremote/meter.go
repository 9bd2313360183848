package slowremote

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
)

// Meter is an HTTP reverse proxy in front of a remote store that counts
// what clients fetch from it: requests and response body bytes. Benchmarks
// read it to know what a run cost the remote, independently of anything
// eddy reports about itself.
type Meter struct {
	ln       net.Listener
	srv      *http.Server
	requests atomic.Int64
	gets     atomic.Int64
	bytes    atomic.Int64
}

// MeterCounts are a Meter's counters at one instant.
type MeterCounts struct {
	// Requests counts every request (GET, HEAD, PROPFIND...); Gets only
	// the GETs, which fetch data.
	Requests, Gets int64
	// Bytes counts response body bytes sent to clients.
	Bytes int64
}

// Sub returns the counts accumulated since earlier.
func (c MeterCounts) Sub(earlier MeterCounts) MeterCounts {
	return MeterCounts{Requests: c.Requests - earlier.Requests, Gets: c.Gets - earlier.Gets, Bytes: c.Bytes - earlier.Bytes}
}

// StartMeter listens on listen (e.g. "127.0.0.1:0") and proxies every
// request to the HTTP server at target ("host:port").
func StartMeter(listen, target string) (*Meter, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	m := &Meter{ln: ln}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.FlushInterval = -1
	m.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.requests.Add(1)
		if r.Method == http.MethodGet {
			m.gets.Add(1)
		}
		rp.ServeHTTP(countingWriter{w, &m.bytes}, r)
	})}
	go func() { _ = m.srv.Serve(ln) }()
	return m, nil
}

// Addr is the address clients connect to.
func (m *Meter) Addr() string { return m.ln.Addr().String() }

// Counts returns the counters now.
func (m *Meter) Counts() MeterCounts {
	return MeterCounts{Requests: m.requests.Load(), Gets: m.gets.Load(), Bytes: m.bytes.Load()}
}

// Close stops the proxy and cuts its connections.
func (m *Meter) Close() error { return m.srv.Close() }

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

func (w countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
