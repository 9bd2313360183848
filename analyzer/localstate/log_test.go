package localstate

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eddy-autotune/eddy/analyzer"
)

func key(i int) analyzer.Key {
	return analyzer.Key{WorkloadNamespace: "ml", WorkloadKind: "Job", WorkloadName: fmt.Sprintf("train-%d", i), DatasetNamespace: "ml", DatasetName: "images"}
}

// contents reads every key's latest checkpoint.
func contents(t *testing.T, l *Log) map[analyzer.Key]string {
	t.Helper()
	out := map[analyzer.Key]string{}
	require.NoError(t, l.Each(func(k analyzer.Key, data []byte) error {
		out[k] = string(data)
		return nil
	}))
	return out
}

// logFile is the one log file in dir.
func logFile(t *testing.T, dir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "checkpoints-*.log"))
	require.NoError(t, err)
	require.Len(t, files, 1)
	return files[0]
}

func TestReopenedLogHoldsEachKeysLatestCheckpoint(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir)
	require.NoError(t, err)
	require.NoError(t, l.Append([]Record{{Key: key(1), Data: []byte("one-a")}, {Key: key(2), Data: []byte("two-a")}, {Key: key(3), Data: []byte("three-a")}}))
	require.NoError(t, l.Append([]Record{{Key: key(1), Data: []byte("one-b")}, {Key: key(3)}}))
	require.NoError(t, l.Close())

	l, err = Open(dir)
	require.NoError(t, err)
	defer l.Close()
	assert.NoError(t, l.Damage())
	assert.Equal(t, map[analyzer.Key]string{key(1): "one-b", key(2): "two-a"}, contents(t, l), "the latest record wins; a dropped key is gone")
}

func TestAFolderInUseIsRefused(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir)
	require.NoError(t, err)
	_, err = Open(dir)
	require.ErrorContains(t, err, "in use by another analyzer")
	require.NoError(t, l.Close())
	l, err = Open(dir)
	require.NoError(t, err, "closing releases the folder")
	l.Close()
}

// writeTwo appends two batches and closes the log, returning the file and
// the size after the first batch.
func writeTwo(t *testing.T, dir string) (string, int64) {
	t.Helper()
	l, err := Open(dir)
	require.NoError(t, err)
	require.NoError(t, l.Append([]Record{{Key: key(1), Data: []byte("one-a")}, {Key: key(2), Data: []byte("two-a")}}))
	first := l.Size()
	require.NoError(t, l.Append([]Record{{Key: key(1), Data: bytes.Repeat([]byte("one-b"), 100)}, {Key: key(3), Data: []byte("three-b")}}))
	require.NoError(t, l.Close())
	return logFile(t, dir), first
}

func TestATornLastWriteIsDropped(t *testing.T) {
	for name, tear := range map[string]func(path string, first int64) error{
		"cut in a header": func(path string, first int64) error { return os.Truncate(path, first+3) },
		"cut in a body":   func(path string, first int64) error { return os.Truncate(path, first+40) },
		"zeroed blocks": func(path string, first int64) error {
			st, err := os.Stat(path)
			if err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt(make([]byte, st.Size()-first), first)
			return err
		},
		"last checksum wrong": func(path string, _ int64) error {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			data[len(data)-1] ^= 0xff
			return os.WriteFile(path, data, 0o600)
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path, first := writeTwo(t, dir)
			require.NoError(t, tear(path, first))
			l, err := Open(dir)
			require.NoError(t, err)
			defer l.Close()
			require.Error(t, l.Damage())
			assert.True(t, IsTorn(l.Damage()), "%v", l.Damage())
			got := contents(t, l)
			assert.Equal(t, "two-a", got[key(2)])
			if name == "last checksum wrong" {
				// Only the last record of the second batch is torn.
				assert.Equal(t, string(bytes.Repeat([]byte("one-b"), 100)), got[key(1)])
				assert.NotContains(t, got, key(3))
			} else {
				assert.Equal(t, map[analyzer.Key]string{key(1): "one-a", key(2): "two-a"}, got, "the second batch is gone, the first whole")
			}
			require.NoError(t, l.Append([]Record{{Key: key(4), Data: []byte("four")}}))
			require.NoError(t, l.Close())
			l, err = Open(dir)
			require.NoError(t, err)
			assert.NoError(t, l.Damage(), "the torn write is gone once the log was compacted")
			assert.Equal(t, "four", contents(t, l)[key(4)])
		})
	}
}

func TestDamageInTheMiddleSkipsWhatFollowsAndIsReported(t *testing.T) {
	dir := t.TempDir()
	path, _ := writeTwo(t, dir)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	// A byte of the first record's key flipped: its checksum fails, and
	// records follow it.
	i := bytes.Index(data, []byte("train-2"))
	require.Positive(t, i)
	data[i] ^= 0x20
	require.NoError(t, os.WriteFile(path, data, 0o600))

	l, err := Open(dir)
	require.NoError(t, err, "damage is reported, not fatal")
	defer l.Close()
	require.Error(t, l.Damage())
	assert.False(t, IsTorn(l.Damage()))
	assert.ErrorContains(t, l.Damage(), "does not match its checksum")
	assert.ErrorContains(t, l.Damage(), "fall back to the AccessProfiles")
	assert.Equal(t, map[analyzer.Key]string{key(1): "one-a"}, contents(t, l), "what came before the damage is kept")
	_, err = os.Stat(filepath.Join(dir, "checkpoints.damaged"))
	assert.NoError(t, err, "the damaged file is kept for a person to look at")
}

func TestAFileThatIsNotALogIsReported(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "checkpoints-0000000000000007.log"), []byte("something else entirely"), 0o600))
	l, err := Open(dir)
	require.NoError(t, err)
	defer l.Close()
	assert.ErrorContains(t, l.Damage(), "is not a checkpoint log")
	assert.Empty(t, contents(t, l))
	require.NoError(t, l.Append([]Record{{Key: key(1), Data: []byte("x")}}))
	assert.Greater(t, l.gen, uint64(7), "a new generation follows the damaged one")
}

func TestTheLogIsCompactedAsItGrows(t *testing.T) {
	old := compactFloor
	compactFloor = 64 << 10
	t.Cleanup(func() { compactFloor = old })
	dir := t.TempDir()
	l, err := Open(dir)
	require.NoError(t, err)
	payload := bytes.Repeat([]byte{'x'}, 1000)
	largest := int64(0)
	for round := range 200 {
		var recs []Record
		for i := range 10 {
			recs = append(recs, Record{Key: key(i), Data: append(fmt.Appendf(nil, "%d:", round), payload...)})
		}
		require.NoError(t, l.Append(recs))
		largest = max(largest, l.Size())
	}
	assert.LessOrEqual(t, largest, compactFloor+20*1100, "the log stays near its floor")
	want := contents(t, l)
	require.NoError(t, l.Close())
	l, err = Open(dir)
	require.NoError(t, err)
	defer l.Close()
	assert.Equal(t, want, contents(t, l))
	assert.Equal(t, "199:", contents(t, l)[key(3)][:4])
	logFile(t, dir) // one file left
}
