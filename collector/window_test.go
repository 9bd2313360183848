package collector

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	"github.com/eddy-autotune/eddy/bpf"
	"github.com/eddy-autotune/eddy/collector/ship"
)

// staticPods attributes cgroups from a fixed table.
type staticPods map[uint64]*PodContainer

func (s staticPods) Lookup(id uint64) (*PodContainer, bool) { pc, ok := s[id]; return pc, ok }

func (s staticPods) Observed() (int, int) { return len(s), 0 }

func (s staticPods) ObservedPods() []*corev1.Pod {
	var out []*corev1.Pod
	for _, pc := range s {
		out = append(out, pc.Pod)
	}
	return out
}

func openShipper(t testing.TB) *ship.Shipper {
	s, err := ship.Open(ship.Options{Dir: t.TempDir(), Node: "node-1", MaxBuffered: 4})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func monoNow(t *testing.T) uint64 {
	var ts unix.Timespec
	require.NoError(t, unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
	return uint64(ts.Nano())
}

func TestWindowAssembly(t *testing.T) {
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "web-7d9f8b6c5d-x2x9z", UID: types.UID("uid-a"),
			OwnerReferences: []metav1.OwnerReference{ctrl("apps/v1", "ReplicaSet", "web-7d9f8b6c5d")}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "main", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes:    []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "imagenet"}}}},
		},
	}
	pod.Annotations = map[string]string{eddyv1alpha1.RecommendationAnnotation: "web.imagenet.prefetch-1a2b3c, Not A Name"}
	// The debug pod mounts a volume where its shell's working directory is.
	cwd, err := os.Getwd()
	require.NoError(t, err)
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "debug", UID: types.UID("uid-b")},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "sh", VolumeMounts: []corev1.VolumeMount{{Name: "notes", MountPath: cwd}}}},
			Volumes:    []corev1.Volume{{Name: "notes", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		}}
	// Cgroups 101 and 102 are one container (a nested cgroup), 201 another pod.
	pods := staticPods{
		101: {Pod: pod, Container: "main", CgroupID: 101},
		102: {Pod: pod, Container: "main", CgroupID: 102},
		201: {Pod: other, Container: "sh", CgroupID: 201},
	}
	src := NewReplaySource()
	for _, id := range []uint64{101, 102, 201, 999} {
		require.NoError(t, src.Allow(id))
	}
	calls := 0
	sink := openShipper(t)
	c, err := New(Options{
		Node: "node-1", Source: src, Pods: pods, Sink: sink,
		Workloads: owners{"ReplicaSet/web-7d9f8b6c5d": {ctrl("apps/v1", "Deployment", "web")}}.resolver(&calls),
		Datasets:  NewDatasetResolver(nil, nil, 0),
		Metrics:   NewMetrics(0),
	})
	require.NoError(t, err)

	now := monoNow(t)
	file := bpf.FileKey{CgroupID: 101, Dev: 0x800001, Ino: 10}
	nested := bpf.FileKey{CgroupID: 102, Dev: 0x800001, Ino: 10}
	rel := bpf.FileKey{CgroupID: 201, Dev: 0x800001, Ino: 77}
	nopath := bpf.FileKey{CgroupID: 201, Dev: 0x800001, Ino: 78}
	r1 := bpf.Record{Key: file, ReadOps: 4, ReadBytes: 4 << 20, SeqSteps: 3, RandSteps: 1, ReadWaitNs: 2e6,
		PagesRequested: 1024, PagesAdded: 1000, Opens: 1, Passes: 1,
		FirstNs: now - 2e9, LastNs: now - 1e9, LastPassNs: now - 2e9, MaxOffset: 4 << 20, FileSize: 8 << 20,
		Ranges: []bpf.ReadRange{{Offset: 0, End: 1 << 20}, {Offset: 3 << 20, End: 4 << 20}}}
	r1.ReadSizeLog2[20] = 4
	r1.ReadLatencyLog2[19] = 4
	r2 := bpf.Record{Key: nested, ReadOps: 2, ReadBytes: 2 << 20, SeqSteps: 2, FirstNs: now - 3e9, LastNs: now - 5e8,
		MaxOffset: 6 << 20, FileSize: 9 << 20, Ranges: []bpf.ReadRange{{Offset: 2 << 20, End: 6 << 20}}}
	r2.ReadSizeLog2[20] = 2
	src.Push([]bpf.Record{
		r1, r2,
		{Key: rel, ReadOps: 1, ReadBytes: 100},
		{Key: nopath, ReadOps: 1, ReadBytes: 1},
		{Key: bpf.FileKey{CgroupID: 999, Ino: 5}, ReadOps: 9},
		{Key: bpf.FileKey{CgroupID: 555, Ino: 6}, ReadOps: 9}, // not allowed: the kernel never counts it
	}, []bpf.FileEvent{
		{Key: file, Path: "/data/train/a.JPEG", Pid: 1},
		{Key: nested, Pid: 1 << 30}, // no path, and its process gone
		{Key: rel, Path: "notes.txt", Pid: uint32(os.Getpid())},
		{Key: nopath, Pid: 1 << 30},
	})
	src.SetStats(SourceStats{EventsLost: 5, MapFull: 1})

	w, err := c.Tick(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), w.Sequence)
	assert.Equal(t, 1, sink.Stats().Buffered, "the window is stored for shipping")
	assert.Equal(t, "node-1", w.Node)
	assert.Less(t, w.StartUnixNano, w.EndUnixNano)
	assertProto(t, &accessv1.Dropped{RingbufEvents: 5, MapFull: 1}, w.Dropped, "cgroup 999's record is held for a later drain")
	require.Len(t, w.Files, 2)
	assert.Equal(t, 1.0, counterValue(t, c.opts.Metrics, "eddy_collector_records_outside_datasets_total"),
		"a file whose event has no path has no dataset: not shipped")

	// Sorted by namespace, pod, container, path: "debug" before "web-...".
	assert.Equal(t, "debug", w.Files[0].Pod)
	assert.Equal(t, "notes.txt", w.Files[0].Path, "relative paths resolve against the process's cwd, then the volume")
	assertProto(t, &accessv1.DatasetRef{Namespace: "ml", Name: "notes", Source: "Volume"}, w.Files[0].Dataset)
	assertProto(t, &accessv1.WorkloadRef{Namespace: "ml", Kind: "Pod", ApiVersion: "v1", Name: "debug", Rule: "Object", Object: "debug"}, w.Files[0].Workload)

	fa := w.Files[1]
	assert.Equal(t, "web-7d9f8b6c5d-x2x9z", fa.Pod)
	assert.Equal(t, "uid-a", fa.PodUid)
	assert.Equal(t, "main", fa.Container)
	assertProto(t, &accessv1.WorkloadRef{Namespace: "ml", Kind: "Deployment", ApiVersion: "apps/v1", Name: "web", Rule: "Object", Object: "web"}, fa.Workload)
	assert.Equal(t, []string{"web.imagenet.prefetch-1a2b3c"}, fa.Recommendations, "the recommendations applied to the pod, valid names only")
	assertProto(t, &accessv1.DatasetRef{Namespace: "ml", Name: "imagenet", Source: "PVC", Pvc: "imagenet"}, fa.Dataset)
	assert.Equal(t, "train/a.JPEG", fa.Path)
	assert.Equal(t, uint64(0x800001), fa.Dev)
	assert.Equal(t, uint64(10), fa.Ino)
	// The nested cgroup's record is merged into the container's.
	assert.Equal(t, uint64(6), fa.ReadOps)
	assert.Equal(t, uint64(6<<20), fa.ReadBytes)
	assert.Equal(t, uint64(5), fa.SeqSteps)
	assert.Equal(t, uint64(1), fa.RandSteps)
	assert.Equal(t, uint64(2e6), fa.ReadWaitNano)
	assert.Equal(t, uint64(1000), fa.PagesAdded)
	assert.Equal(t, uint64(6<<20), fa.MaxOffset)
	require.Len(t, fa.ReadRanges, 3, "the read ranges of both records")
	for i, want := range [][2]uint64{{0, 1 << 20}, {2 << 20, 6 << 20}, {3 << 20, 4 << 20}} {
		assert.Equal(t, want, [2]uint64{fa.ReadRanges[i].Offset, fa.ReadRanges[i].End}, "sorted by offset")
	}
	assert.Equal(t, int64(9<<20), fa.FileSize, "size from the latest record")
	assert.Len(t, fa.ReadSizeLog2, 21, "trailing empty buckets are trimmed")
	assert.Equal(t, uint64(6), fa.ReadSizeLog2[20])
	assert.Equal(t, uint64(4), fa.ReadLatencyLog2[19])
	// Monotonic times become wall-clock times.
	wallNow := time.Now().UnixNano()
	assert.InDelta(t, wallNow-3e9, fa.FirstAccessUnixNano, 0.9e9)
	assert.InDelta(t, wallNow-5e8, fa.LastAccessUnixNano, 0.9e9)
	assert.InDelta(t, wallNow-2e9, fa.LastPassUnixNano, 0.9e9)

	// The next window starts where this one ended and reports only new losses.
	src.SetStats(SourceStats{EventsLost: 7, MapFull: 1})
	w2, err := c.Tick(ctx)
	require.NoError(t, err)
	assert.Equal(t, w.EndUnixNano, w2.StartUnixNano)
	assert.Empty(t, w2.Files)
	assertProto(t, &accessv1.Dropped{RingbufEvents: 2, UnattributedRecords: 1}, w2.Dropped,
		"with the default 10s interval a record is held for one drain, then dropped")
	assert.Equal(t, 2, calls, "workload owners are looked up once: the ReplicaSet, and its Deployment (not found, remembered for a while)")
}

// A container's reads drained before the pod index knows the container
// (the kernel records it from the instant its cgroup exists, the kubelet
// names it up to a second or two later) are held and come out in the first
// window after it is known; records never attributed are dropped after
// HoldUnattributed and counted.
func TestUnattributedRecordsAreHeldUntilTheirContainerIsKnown(t *testing.T) {
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "train-1-abc", UID: types.UID("uid-t")},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "trainer", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes:    []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		}}
	pods := staticPods{}
	src := NewReplaySource()
	require.NoError(t, src.Allow(301))
	require.NoError(t, src.Allow(302))
	m := NewMetrics(0)
	c, err := New(Options{
		Node: "node-1", Source: src, Pods: pods, Sink: openShipper(t),
		Workloads: owners{}.resolver(new(int)), Datasets: NewDatasetResolver(nil, nil, 0),
		Interval: time.Second, HoldUnattributed: 3 * time.Second, Metrics: m,
	})
	require.NoError(t, err)
	known := bpf.FileKey{CgroupID: 301, Dev: 1, Ino: 10}
	never := bpf.FileKey{CgroupID: 302, Dev: 1, Ino: 11}
	src.Push([]bpf.Record{{Key: known, ReadOps: 100, ReadBytes: 100 << 12}, {Key: never, ReadOps: 1, ReadBytes: 1}},
		[]bpf.FileEvent{{Key: known, Path: "/data/a.bin", Pid: 1}})

	w, err := c.Tick(ctx)
	require.NoError(t, err)
	assert.Empty(t, w.Files)
	assert.Zero(t, w.Dropped.GetUnattributedRecords())
	assert.Equal(t, 2.0, heldRecords(t, m))

	// The pod index learns the container; more reads come in.
	pods[301] = &PodContainer{Pod: pod, Container: "trainer", CgroupID: 301}
	src.Push([]bpf.Record{{Key: known, ReadOps: 5, ReadBytes: 5 << 12}}, nil)
	w, err = c.Tick(ctx)
	require.NoError(t, err)
	require.Len(t, w.Files, 1)
	assert.Equal(t, "trainer", w.Files[0].Container)
	assert.Equal(t, uint64(105), w.Files[0].ReadOps, "the held record and the new one, merged")
	assert.Equal(t, "a.bin", w.Files[0].Path, "the path of a held record's file is kept")
	assert.Zero(t, w.Dropped.GetUnattributedRecords())

	// The other record is dropped on its third drain (3s at 1s intervals).
	w, err = c.Tick(ctx)
	require.NoError(t, err)
	assert.Zero(t, w.Dropped.GetUnattributedRecords())
	w, err = c.Tick(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), w.Dropped.GetUnattributedRecords())
	assert.Zero(t, heldRecords(t, m))
}

// TestRecordsWaitForTheirFilesEvent: the kernel sends a file's event (the
// path of its open) before any record of it, but the collector may take the
// event after the record (CI lost 8 of a pod's 48 files to no dataset so): a
// record whose file's event was not taken waits for it, and goes without a
// path only when it was lost.
func TestRecordsWaitForTheirFilesEvent(t *testing.T) {
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "train-1-abc", UID: types.UID("uid-t")},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "trainer", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes:    []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		}}
	src := NewReplaySource()
	require.NoError(t, src.Allow(301))
	m := NewMetrics(0)
	c, err := New(Options{
		Node: "node-1", Source: src, Pods: staticPods{301: {Pod: pod, Container: "trainer", CgroupID: 301}}, Sink: openShipper(t),
		Workloads: owners{}.resolver(new(int)), Datasets: NewDatasetResolver(nil, nil, 0),
		Interval: time.Second, HoldUnattributed: 2 * time.Second, Metrics: m,
	})
	require.NoError(t, err)
	late := bpf.FileKey{CgroupID: 301, Dev: 1, Ino: 10}
	lost := bpf.FileKey{CgroupID: 301, Dev: 1, Ino: 11}
	src.Push([]bpf.Record{{Key: late, ReadOps: 2, ReadBytes: 2 << 16}, {Key: lost, ReadOps: 1, ReadBytes: 1 << 16}}, nil)
	w, err := c.Tick(ctx)
	require.NoError(t, err)
	assert.Empty(t, w.Files, "both wait for their events")
	assert.Equal(t, 2.0, heldRecords(t, m))

	src.Push(nil, []bpf.FileEvent{{Key: late, Path: "/data/a.bin", Pid: 1}})
	w, err = c.Tick(ctx)
	require.NoError(t, err)
	require.Len(t, w.Files, 1)
	assert.Equal(t, "a.bin", w.Files[0].Path, "the event came: the record has its path and dataset")
	assertProto(t, &accessv1.DatasetRef{Namespace: "ml", Name: "data", Source: "Volume"}, w.Files[0].Dataset)
	assert.Equal(t, 1.0, heldRecords(t, m))

	before := counterValue(t, m, "eddy_collector_records_outside_datasets_total")
	w, err = c.Tick(ctx)
	require.NoError(t, err)
	assert.Empty(t, w.Files)
	assert.Zero(t, w.Dropped.GetUnattributedRecords(), "its container is known: not dropped")
	assert.Equal(t, before+1, counterValue(t, m, "eddy_collector_records_outside_datasets_total"), "the lost event's record goes without a path at its last chance")
	assert.Zero(t, heldRecords(t, m))

	src.Push([]bpf.Record{{Key: lost, ReadOps: 1, ReadBytes: 1 << 16}}, nil)
	_, err = c.Tick(ctx)
	require.NoError(t, err)
	assert.Zero(t, heldRecords(t, m), "the file's next records do not wait again")

	// At shutdown the last drain does not leave a record waiting for its
	// path: it goes without.
	src.Push([]bpf.Record{{Key: bpf.FileKey{CgroupID: 301, Dev: 1, Ino: 12}, ReadOps: 1, ReadBytes: 1 << 16}}, nil)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	cancel()
	require.NoError(t, <-done)
	assert.Equal(t, before+3, counterValue(t, m, "eddy_collector_records_outside_datasets_total"), "the lost file's second record, then this one")
	assert.Zero(t, c.unattributed, "nothing of a known container is dropped at shutdown")
}

// heldRecords reads the held_records gauge.
func heldRecords(t *testing.T, m *Metrics) float64 {
	t.Helper()
	return counterValue(t, m, "eddy_collector_held_records")
}

// counterValue reads the value of an unlabelled counter or gauge.
func counterValue(t *testing.T, m *Metrics, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(m))
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name {
			if g := f.GetMetric()[0].GetGauge(); g != nil {
				return g.GetValue()
			}
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

func TestClockOffsetKeepsZero(t *testing.T) {
	off := clockOffset(1_000)
	assert.Zero(t, off.wall(0))
	assert.Equal(t, int64(1_005), off.wall(5))
}

// assertProto compares messages by content (marshalling leaves size caches
// behind that a field-by-field comparison would trip on).
func assertProto(t *testing.T, want, got proto.Message, msg ...string) {
	t.Helper()
	assert.True(t, proto.Equal(want, got), "%s\nwant %v\ngot  %v", strings.Join(msg, " "), prototext.Format(want), prototext.Format(got))
}

func TestReadRangesAreBounded(t *testing.T) {
	fa := &accessv1.FileAccess{}
	rs := make([]bpf.ReadRange, accessv1.MaxReadRanges+5)
	for i := range rs {
		rs[i] = bpf.ReadRange{Offset: uint64(i) << 12, End: uint64(i)<<12 + 4096}
	}
	addRanges(fa, rs)
	assert.Len(t, fa.ReadRanges, accessv1.MaxReadRanges)
	assert.EqualValues(t, 5, fa.ReadRangesDropped, "ranges beyond the bound are counted")
}

// TestWindowsSayWhichPodsWereWatched: a window names the pods observed at
// its drain and the one before (watched through all of it), with their
// workloads, whether or not they read: a pod that starts being observed
// mid-window, or is no longer observed, is not named, so the analyzer counts
// no quiet for a time nobody watched.
func TestWindowsSayWhichPodsWereWatched(t *testing.T) {
	ctx := context.Background()
	quiet := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "train-1", UID: types.UID("uid-1")}}
	late := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "eval-7", UID: types.UID("uid-7")}}
	pods := staticPods{301: {Pod: quiet, Container: "main", CgroupID: 301}}
	c, err := New(Options{
		Node: "node-1", Source: NewReplaySource(), Pods: pods, Sink: openShipper(t),
		Workloads: owners{}.resolver(new(int)), Datasets: NewDatasetResolver(nil, nil, 0),
	})
	require.NoError(t, err)
	names := func(w *accessv1.AccessWindow) []string {
		var out []string
		for _, o := range w.Observed {
			out = append(out, o.Workload.GetKind()+"/"+o.Workload.GetName()+" "+o.Pod+" "+o.PodUid)
		}
		return out
	}
	w, err := c.Tick(ctx)
	require.NoError(t, err)
	assert.Empty(t, names(w), "the first window: watched since when is not known")
	pods[302] = &PodContainer{Pod: late, Container: "main", CgroupID: 302}
	w, err = c.Tick(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"Pod/train train-1 uid-1"}, names(w), "the quiet pod is watched; the late one only from its first drain")
	assert.Empty(t, w.Files)
	w, err = c.Tick(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"Pod/train train-1 uid-1", "Pod/eval eval-7 uid-7"}, names(w))
	delete(pods, 301)
	w, err = c.Tick(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"Pod/eval eval-7 uid-7"}, names(w), "a pod no longer observed is not named")
}
