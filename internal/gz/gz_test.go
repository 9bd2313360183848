package gz

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A reused writer carries nothing from one document into the next, at
// every level; a failed write returns the error and leaves the pool usable.
func TestCompressReusesWritersCleanly(t *testing.T) {
	for _, level := range []int{gzip.BestSpeed, gzip.DefaultCompression} {
		docs := []string{strings.Repeat("a", 100000), "b", ""}
		for range 3 {
			for _, d := range docs {
				data, err := Compress(level, func(w io.Writer) error { _, err := io.WriteString(w, d); return err })
				require.NoError(t, err)
				zr, err := gzip.NewReader(bytes.NewReader(data))
				require.NoError(t, err)
				got, err := io.ReadAll(zr)
				require.NoError(t, err)
				require.Equal(t, d, string(got))
			}
		}
		boom := errors.New("boom")
		_, err := Compress(level, func(w io.Writer) error { _, _ = io.WriteString(w, "half"); return boom })
		require.ErrorIs(t, err, boom)
	}
	_, err := Compress(42, func(io.Writer) error { return nil })
	require.Error(t, err)
}
