// Package gz compresses with gzip writers that are reused: a gzip writer's
// compressor is hundreds of KiB to allocate and clear, which for the
// analyzer's many small documents (checkpoints, manifests) cost more than
// the compression itself.
package gz

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"sync"
)

var pools sync.Map // level → *sync.Pool of *gzip.Writer

// Compress returns what write writes, gzip-compressed at level (one of
// compress/gzip's levels).
func Compress(level int, write func(io.Writer) error) ([]byte, error) {
	if level < gzip.HuffmanOnly || level > gzip.BestCompression {
		return nil, fmt.Errorf("gzip level %d", level)
	}
	p, _ := pools.LoadOrStore(level, &sync.Pool{New: func() any {
		zw, _ := gzip.NewWriterLevel(io.Discard, level)
		return zw
	}})
	pool := p.(*sync.Pool)
	zw := pool.Get().(*gzip.Writer)
	defer pool.Put(zw)
	var buf bytes.Buffer
	zw.Reset(&buf)
	if err := write(zw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
