package bpf

import (
	"reflect"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestToRecordCopiesEveryKernelField guards the hand-written conversion: a
// field added to struct file_stats in access.bpf.c must reach Record.
func TestToRecordCopiesEveryKernelField(t *testing.T) {
	var v accessFileStats
	vv := reflect.ValueOf(&v).Elem()
	next := uint64(1)
	for i := 0; i < vv.NumField(); i++ {
		f := vv.Field(i)
		switch f.Kind() {
		case reflect.Uint64:
			f.SetUint(next)
			next++
		case reflect.Array:
			for j := 0; j < f.Len(); j++ {
				f.Index(j).SetUint(next)
				next++
			}
		}
	}
	k := accessFileKey{CgroupId: 7, Dev: 8, Ino: 9}
	rec := toRecord(&k, &v)
	assert.Equal(t, FileKey{CgroupID: 7, Dev: 8, Ino: 9}, rec.Key)
	rv := reflect.ValueOf(rec)
	for i := 0; i < vv.NumField(); i++ {
		name := vv.Type().Field(i).Name
		if name == "_" {
			continue
		}
		got := rv.FieldByName(name)
		if assert.True(t, got.IsValid(), "Record has no field %s", name) {
			assert.Equal(t, vv.Field(i).Interface(), got.Interface(), name)
		}
	}
}

func TestDecodeEvent(t *testing.T) {
	var e accessFileEvent
	e.CgroupId, e.Dev, e.Ino, e.TimeNs, e.Pid = 1, 2, 3, 4, 5
	path := "/data/train/0001.jpg"
	for i := range path {
		e.Path[i] = int8(path[i])
	}
	e.PathLen = uint16(len(path))
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&e)), unsafe.Sizeof(e))

	ev, err := decodeEvent(raw)
	require.NoError(t, err)
	assert.Equal(t, FileEvent{Key: FileKey{CgroupID: 1, Dev: 2, Ino: 3}, Path: path, Pid: 5, TimeNs: 4}, ev)

	e.Truncated = 1
	ev, err = decodeEvent(raw)
	require.NoError(t, err)
	assert.True(t, ev.Truncated)

	_, err = decodeEvent(raw[:10])
	assert.ErrorContains(t, err, "10 bytes")
}
