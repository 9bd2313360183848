// Package localstate keeps the analyzer's checkpoints on a local volume, in
// an append-only log: each flush appends the checkpoint of every key it
// took, in one buffered write made durable by one fdatasync, so that the
// windows those checkpoints cover can be acknowledged to collectors at once,
// whatever the API server's pace. Writing the AccessProfiles follows behind.
//
// Every record carries its length and a CRC-32C of its contents. A write
// torn by a crash is found when the log is opened (the last record is short
// or does not match its checksum) and dropped: it was never acknowledged.
// Damage anywhere else stops the reading there; what follows is skipped and
// reported, and the caller falls back to the AccessProfiles' checkpoints for
// what the log no longer holds. Opening never fails because of the log's
// contents, only because the folder cannot be used.
//
// The log is rewritten (compacted) into a new file holding only each key's
// latest record when it is opened and whenever it grows past four times
// those; the new file is complete before it is renamed into place, and the
// old one is removed only after.
package localstate

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/internal/durable"
)

// File layout: a log file starts with fileMagic; then records, each a
// header of the body's length and its CRC-32C (Castagnoli), both
// little-endian uint32, and the body: the key's JSON length (uvarint), the
// key's JSON, and the checkpoint (empty: the key was dropped).
const (
	fileMagic  = "EDDYCKP1"
	headerSize = 8
	// maxBody bounds a record's body: a length past it is damage, not a
	// record (checkpoints are a few KiB to a few MiB).
	maxBody = 256 << 20
)

// compactFloor is the least size at which a log is compacted.
var compactFloor int64 = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one key's checkpoint; nil Data says the key was dropped (its
// state forgotten) and its earlier records no longer count.
type Record struct {
	Key  analyzer.Key
	Data []byte
}

// loc is where a key's latest record is: its body in file f.
type loc struct {
	f   *os.File
	off int64 // of the body
	n   int32
}

// Log is a folder's checkpoint log. It is not safe for concurrent use.
type Log struct {
	dir  string
	lock *os.File
	gen  uint64
	f    *os.File // the log appended to
	size int64
	// live is each key's latest record; liveBytes their sizes with headers.
	live      map[analyzer.Key]loc
	liveBytes int64
	// broken is set when a failed append could not be undone: the next
	// Append compacts first, so that it does not follow a partial record.
	broken bool
	damage error
}

// Open opens (creating it if needed) the log in dir, reads every record it
// holds, and compacts it into a new file. It fails only when dir cannot be
// used (created, locked, read, written); damage in the log is reported by
// Damage.
func Open(dir string) (*Log, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("checkpoint folder %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("checkpoint folder %s: %w", dir, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("checkpoint folder %s is in use by another analyzer (%w); give each its own --checkpoint-dir", dir, err)
	}
	l := &Log{dir: dir, lock: lock, live: map[analyzer.Key]loc{}}
	gens, err := l.generations()
	if err != nil {
		l.Close()
		return nil, err
	}
	var damage []error
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	for _, g := range gens {
		f, err := os.Open(l.path(g))
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("open checkpoint log: %w", err)
		}
		opened = append(opened, f)
		if err := l.scan(f); err != nil {
			damage = append(damage, err)
			if !errors.Is(err, errTorn) {
				// Kept for a person to look at; the last damaged file only.
				os.Rename(l.path(g), filepath.Join(dir, "checkpoints.damaged")) //nolint:errcheck // best effort
			}
		}
		l.gen = max(l.gen, g)
	}
	l.damage = errors.Join(damage...)
	if err := l.compact(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// errTorn marks damage at the end of a file only: a write a crash cut short.
var errTorn = errors.New("torn write at the end")

// Damage describes what was wrong with the log when it was opened (nil if
// nothing): torn last writes (IsTorn; harmless: they were never made
// durable, so never acknowledged), or damage after which records were
// skipped.
func (l *Log) Damage() error { return l.damage }

// IsTorn reports whether err (from Damage) is only torn last writes.
func IsTorn(err error) bool {
	if err == nil {
		return false
	}
	var many interface{ Unwrap() []error }
	if errors.As(err, &many) {
		for _, e := range many.Unwrap() {
			if !errors.Is(e, errTorn) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, errTorn)
}

// Keys is how many keys the log holds.
func (l *Log) Keys() int { return len(l.live) }

// Size is the log file's size in bytes.
func (l *Log) Size() int64 { return l.size }

// Each calls fn with each key's latest checkpoint, reading them one at a
// time from the file; fn must not keep data. It stops at fn's first error.
func (l *Log) Each(fn func(k analyzer.Key, data []byte) error) error {
	keys := l.byOffset()
	var buf []byte
	for _, k := range keys {
		at := l.live[k]
		buf = slices.Grow(buf[:0], int(at.n))[:at.n]
		if _, err := at.f.ReadAt(buf, at.off); err != nil {
			return fmt.Errorf("read checkpoint of %s from %s: %w", k, at.f.Name(), err)
		}
		_, data, err := decodeBody(buf)
		if err != nil {
			return fmt.Errorf("read checkpoint of %s from %s: %w", k, at.f.Name(), err)
		}
		if err := fn(k, data); err != nil {
			return err
		}
	}
	return nil
}

// Append writes recs at the end of the log, in one buffered write, and
// makes them durable (fdatasync) before it returns. On error nothing of
// recs counts: the log is as it was.
func (l *Log) Append(recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	if l.broken {
		if err := l.compact(); err != nil {
			return err
		}
	}
	start := l.size
	w := bufio.NewWriterSize(io.NewOffsetWriter(l.f, start), 1<<20)
	at := start
	added := make([]loc, len(recs))
	for i, r := range recs {
		key, err := json.Marshal(r.Key)
		if err != nil {
			return fmt.Errorf("checkpoint of %s: %w", r.Key, err)
		}
		body := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(key)), uint64(len(key)))
		body = append(body, key...)
		n := len(body) + len(r.Data)
		if n > maxBody {
			return fmt.Errorf("checkpoint of %s: %d bytes, at most %d", r.Key, n, maxBody)
		}
		crc := crc32.Update(crc32.Checksum(body, castagnoli), castagnoli, r.Data)
		var h [headerSize]byte
		binary.LittleEndian.PutUint32(h[0:4], uint32(n))
		binary.LittleEndian.PutUint32(h[4:8], crc)
		for _, part := range [][]byte{h[:], body, r.Data} {
			if _, err := w.Write(part); err != nil {
				return l.undo(start, err)
			}
		}
		added[i] = loc{f: l.f, off: at + headerSize, n: int32(n)}
		at += int64(headerSize + n)
	}
	if err := w.Flush(); err != nil {
		return l.undo(start, err)
	}
	if err := unix.Fdatasync(int(l.f.Fd())); err != nil {
		return l.undo(start, fmt.Errorf("fdatasync %s: %w", l.f.Name(), err))
	}
	l.size = at
	for i, r := range recs {
		l.set(r.Key, added[i], r.Data == nil)
	}
	if l.size > max(4*l.liveBytes, compactFloor) {
		// The records are durable already; a failed compaction leaves the
		// log as it is, to be compacted at the next append.
		if err := l.compact(); err != nil {
			return fmt.Errorf("compact checkpoint log (the records were written): %w", err)
		}
	}
	return nil
}

// undo truncates the log back to size after a failed append.
func (l *Log) undo(size int64, cause error) error {
	if err := l.f.Truncate(size); err != nil {
		l.broken = true
	}
	return fmt.Errorf("append to checkpoint log %s: %w", l.f.Name(), cause)
}

// set makes at the latest record of k (dropped: k's state was forgotten).
func (l *Log) set(k analyzer.Key, at loc, dropped bool) {
	if old, ok := l.live[k]; ok {
		l.liveBytes -= int64(headerSize + old.n)
		delete(l.live, k)
	}
	if dropped {
		return
	}
	l.live[k] = at
	l.liveBytes += int64(headerSize + at.n)
}

// Close releases the log and the folder.
func (l *Log) Close() error {
	var err error
	if l.f != nil {
		err = l.f.Close()
		l.f = nil
	}
	if l.lock != nil {
		l.lock.Close() // releases the flock
		l.lock = nil
	}
	return err
}

// scan reads f's records into live; it returns the damage it stopped at.
func (l *Log) scan(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	end := st.Size()
	r := bufio.NewReaderSize(f, 1<<20)
	var magic [len(fileMagic)]byte
	if n, err := io.ReadFull(r, magic[:]); err != nil || string(magic[:]) != fileMagic {
		if end < int64(len(fileMagic)) && string(magic[:n]) == fileMagic[:n] {
			return fmt.Errorf("%s: %w (a %d-byte file)", f.Name(), errTorn, end)
		}
		return fmt.Errorf("%s is not a checkpoint log (it does not start with %q); every key falls back to its AccessProfile", f.Name(), fileMagic)
	}
	at := int64(len(fileMagic))
	var body []byte
	for at < end {
		bad := func(why string) error {
			return fmt.Errorf("%s: record at offset %d: %s; the %d bytes from there on are skipped, their keys fall back to the AccessProfiles", f.Name(), at, why, end-at)
		}
		var h [headerSize]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return fmt.Errorf("%s: %w (%d bytes of a record header at offset %d)", f.Name(), errTorn, end-at, at)
		}
		n := int64(binary.LittleEndian.Uint32(h[0:4]))
		if n > maxBody {
			return bad(fmt.Sprintf("a length of %d bytes, at most %d", n, maxBody))
		}
		if at+headerSize+n > end {
			return fmt.Errorf("%s: %w (a record at offset %d of %d bytes, %d in the file)", f.Name(), errTorn, at, n, end-at-headerSize)
		}
		body = slices.Grow(body[:0], int(n))[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			return fmt.Errorf("%s: read at offset %d: %w", f.Name(), at, err)
		}
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(h[4:8]) {
			if at+headerSize+n == end {
				return fmt.Errorf("%s: %w (the last record, at offset %d, does not match its checksum)", f.Name(), errTorn, at)
			}
			return bad("it does not match its checksum")
		}
		k, data, err := decodeBody(body)
		if err != nil {
			if zeros(f, at, end) {
				return fmt.Errorf("%s: %w (zeros from offset %d on)", f.Name(), errTorn, at)
			}
			return bad(err.Error())
		}
		l.set(k, loc{f: f, off: at + headerSize, n: int32(n)}, len(data) == 0)
		at += headerSize + n
	}
	return nil
}

// zeros reports whether f holds only zero bytes from at to end: a file
// system can leave the blocks of a write a crash cut short zeroed.
func zeros(f *os.File, at, end int64) bool {
	buf := make([]byte, 64<<10)
	for at < end {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), end-at)], at)
		for _, b := range buf[:n] {
			if b != 0 {
				return false
			}
		}
		if err != nil && n == 0 {
			return false
		}
		at += int64(n)
	}
	return true
}

func decodeBody(body []byte) (analyzer.Key, []byte, error) {
	var k analyzer.Key
	n, used := binary.Uvarint(body)
	if used <= 0 || uint64(len(body)-used) < n {
		return k, nil, errors.New("its key does not fit in it")
	}
	if err := json.Unmarshal(body[used:used+int(n)], &k); err != nil {
		return k, nil, fmt.Errorf("its key: %w", err)
	}
	return k, body[used+int(n):], nil
}

// compact writes each key's latest record into the next generation's file,
// makes it durable, renames it into place and removes the older files.
func (l *Log) compact() error {
	next := l.gen + 1
	tmp := l.path(next) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("compact checkpoint log: %w", err)
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("compact checkpoint log into %s: %w", tmp, err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := w.WriteString(fileMagic); err != nil {
		return fail(err)
	}
	at := int64(len(fileMagic))
	keys := l.byOffset()
	moved := make(map[analyzer.Key]loc, len(keys))
	var buf []byte
	for _, k := range keys {
		old := l.live[k]
		buf = slices.Grow(buf[:0], headerSize+int(old.n))[:headerSize+int(old.n)]
		if _, err := old.f.ReadAt(buf, old.off-headerSize); err != nil {
			return fail(fmt.Errorf("read the record of %s: %w", k, err))
		}
		if _, err := w.Write(buf); err != nil {
			return fail(err)
		}
		moved[k] = loc{f: f, off: at + headerSize, n: old.n}
		at += int64(len(buf))
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, l.path(next)); err != nil {
		return fail(err)
	}
	if err := durable.SyncDir(l.dir); err != nil {
		// Renamed, not yet durably: the older files stay, and are read
		// first at the next open (the new one, read after, agrees).
		l.adopt(f, next, at, moved)
		return nil
	}
	old, _ := l.generations()
	l.adopt(f, next, at, moved)
	for _, g := range old {
		if g < next {
			os.Remove(l.path(g))
		}
	}
	return nil
}

// adopt makes f (generation gen, size bytes, holding moved) the log.
func (l *Log) adopt(f *os.File, gen uint64, size int64, moved map[analyzer.Key]loc) {
	if l.f != nil {
		l.f.Close()
	}
	l.f, l.gen, l.size, l.live, l.broken = f, gen, size, moved, false
	l.liveBytes = 0
	for _, at := range moved {
		l.liveBytes += int64(headerSize + at.n)
	}
}

// byOffset is the live keys in file order (reads sequential on disk).
func (l *Log) byOffset() []analyzer.Key {
	keys := make([]analyzer.Key, 0, len(l.live))
	for k := range l.live {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b analyzer.Key) int {
		x, y := l.live[a], l.live[b]
		if x.f != y.f {
			return strings.Compare(x.f.Name(), y.f.Name())
		}
		return int(x.off - y.off)
	})
	return keys
}

func (l *Log) path(gen uint64) string {
	return filepath.Join(l.dir, fmt.Sprintf("checkpoints-%016x.log", gen))
}

// generations lists the log files' generations, oldest first, and removes
// files a compaction left unfinished.
func (l *Log) generations() ([]uint64, error) {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint folder %s: %w", l.dir, err)
	}
	var gens []uint64
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".log.tmp") {
			os.Remove(filepath.Join(l.dir, name))
			continue
		}
		hex, ok := strings.CutPrefix(name, "checkpoints-")
		if !ok {
			continue
		}
		hex, ok = strings.CutSuffix(hex, ".log")
		if !ok {
			continue
		}
		g, err := strconv.ParseUint(hex, 16, 64)
		if err != nil {
			continue
		}
		gens = append(gens, g)
	}
	slices.Sort(gens)
	return gens, nil
}
