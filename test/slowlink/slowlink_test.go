package slowlink

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// server answers every connection with size bytes after reading one byte.
func server(t *testing.T, size int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 1)
				if _, err := c.Read(b); err != nil {
					return
				}
				_, _ = c.Write(make([]byte, size))
			}()
		}
	}()
	return ln.Addr().String()
}

func fetch(t *testing.T, addr string) int64 {
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte{1})
	require.NoError(t, err)
	n, err := io.Copy(io.Discard, c)
	require.NoError(t, err)
	return n
}

func TestDelayAndSharedBandwidth(t *testing.T) {
	const delay, bw = 30 * time.Millisecond, 8 << 20
	p, err := Start("127.0.0.1:0", server(t, 1), delay, bw)
	require.NoError(t, err)
	start := time.Now()
	fetch(t, p.Addr())
	rtt := time.Since(start)
	require.NoError(t, p.Close())
	assert.GreaterOrEqual(t, rtt, 2*delay)
	assert.Less(t, rtt, 2*delay+40*time.Millisecond)

	const size = 2 << 20
	p, err = Start("127.0.0.1:0", server(t, size), delay, bw)
	require.NoError(t, err)
	defer func() { require.NoError(t, p.Close()) }()
	start = time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); assert.Equal(t, int64(size), fetch(t, p.Addr())) }()
	}
	wg.Wait()
	rate := float64(4*size) / time.Since(start).Seconds()
	t.Logf("4 parallel fetches: %.2f MiB/s on an %.0f MiB/s link", rate/(1<<20), float64(bw)/(1<<20))
	assert.Less(t, rate, bw*1.1, "the cap is shared by all connections")
	assert.Greater(t, rate, bw*0.7)
	_, down := p.Bytes()
	assert.Equal(t, int64(4*size), down)
}
