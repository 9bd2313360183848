package manifest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eddy-autotune/eddy/analyzer"
	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

func rec(path string) *accessv1.FileAccess {
	return &accessv1.FileAccess{
		Workload:  &accessv1.WorkloadRef{Namespace: "ml", Kind: "Job", Name: "train"},
		Dataset:   &accessv1.DatasetRef{Namespace: "ml", Name: "imagenet"},
		Path:      path,
		ReadOps:   1,
		ReadBytes: 4096,
	}
}

// A workload that opens ever more long paths cannot make the analyzer hold
// more than MaxPathBytesPerKey of them; the manifest says it was cut, and
// the bound holds again after a restart.
func TestPathBytesAreBoundedPerKey(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, DefaultMaxFiles)
	require.NoError(t, err)
	long := strings.Repeat("x", 4000)
	n := MaxPathBytesPerKey/4000 + 50
	recs := make([]*accessv1.FileAccess, 0, n)
	for i := range n {
		recs = append(recs, rec(fmt.Sprintf("%s/%08d", long, i)))
	}
	s.Observe(recs)
	k := analyzer.KeyOf(recs[0])
	doc, ok := s.Get(k, 0, 0.9)
	require.True(t, ok)
	assert.True(t, doc.Truncated)
	held := 0
	for _, f := range doc.Files {
		held += len(f)
	}
	assert.LessOrEqual(t, held, MaxPathBytesPerKey)
	assert.Greater(t, held, MaxPathBytesPerKey-8000, "the bound is the path bytes, not fewer")
	require.NoError(t, s.Flush())

	s2, err := NewStore(dir, DefaultMaxFiles)
	require.NoError(t, err)
	s2.Observe([]*accessv1.FileAccess{rec(long + "/after-restart")})
	doc2, ok := s2.Get(k, 0, 0.9)
	require.True(t, ok)
	assert.Len(t, doc2.Files, len(doc.Files), "a restarted store still counts the paths it holds")

	// Records without a dataset make no key a manifest can be asked for.
	r := rec("/a")
	r.Dataset = nil
	s2.Observe([]*accessv1.FileAccess{r})
	_, ok = s2.Get(analyzer.KeyOf(r), 0, 0.9)
	assert.False(t, ok)
}
