package collector

import (
	"sort"
	"strings"
	"time"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	"github.com/eddy-autotune/eddy/bpf"
)

// attributed is one drained record with what attribution found for it.
type attributed struct {
	rec       bpf.Record
	pod       *corev1.Pod
	container string
	workload  *accessv1.WorkloadRef
	dataset   *accessv1.DatasetRef
	// path is relative to the dataset root, or absolute inside the
	// container when there is no dataset, or empty when unknown.
	path string
}

// clockOffset converts the kernel's CLOCK_MONOTONIC nanoseconds to wall-clock
// Unix nanoseconds: it is wall minus monotonic, sampled together.
type clockOffset int64

// sampleClockOffset reads both clocks back to back.
func sampleClockOffset() clockOffset {
	var ts unix.Timespec
	wall := time.Now().UnixNano()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return clockOffset(wall - ts.Nano())
}

// wall converts a monotonic time; 0 (never) stays 0.
func (o clockOffset) wall(mono uint64) int64 {
	if mono == 0 {
		return 0
	}
	return int64(mono) + int64(o)
}

type fileAccessKey struct {
	podUID, container string
	dev, ino          uint64
}

// buildWindow aggregates attributed records into one window: one FileAccess
// per (pod, container, file), files sorted by pod, container and path. Files
// outside every pod volume are left out, and counted in the second result.
func buildWindow(node string, start, end time.Time, off clockOffset, recs []attributed, dropped *accessv1.Dropped) (*accessv1.AccessWindow, uint64) {
	byKey := map[fileAccessKey]*accessv1.FileAccess{}
	var files []*accessv1.FileAccess
	for _, a := range recs {
		k := fileAccessKey{string(a.pod.UID), a.container, a.rec.Key.Dev, a.rec.Key.Ino}
		fa, ok := byKey[k]
		if !ok {
			fa = &accessv1.FileAccess{
				Workload:        a.workload,
				Pod:             a.pod.Name,
				PodUid:          string(a.pod.UID),
				Container:       a.container,
				Dataset:         a.dataset,
				Path:            a.path,
				Dev:             a.rec.Key.Dev,
				Ino:             a.rec.Key.Ino,
				Recommendations: appliedRecommendations(a.pod),
				ReadSizeLog2:    make([]uint64, bpf.ReadSizeBuckets),
				ReadLatencyLog2: make([]uint64, bpf.LatencyBuckets),
			}
			byKey[k] = fa
			files = append(files, fa)
		}
		if fa.Dataset == nil && a.dataset != nil {
			// A nested cgroup's record of the file may be the one with a path.
			fa.Dataset, fa.Path = a.dataset, a.path
		}
		addRecord(fa, &a.rec, off)
	}
	// Files outside every pod volume (what the runtime mounts in, such as
	// /etc/hosts; a container's own binary and libraries the kernel programs
	// already leave out, see on_own_root in bpf/access.bpf.c) are not data
	// the workload reads: nothing to profile or prefetch.
	var outside uint64
	kept := files[:0]
	for _, fa := range files {
		if fa.Dataset == nil {
			outside++
			continue
		}
		fa.ReadSizeLog2 = trimZeros(fa.ReadSizeLog2)
		fa.ReadLatencyLog2 = trimZeros(fa.ReadLatencyLog2)
		kept = append(kept, fa)
	}
	files = kept
	sort.Slice(files, func(i, j int) bool {
		a, b := files[i], files[j]
		if a.Workload.GetNamespace() != b.Workload.GetNamespace() {
			return a.Workload.GetNamespace() < b.Workload.GetNamespace()
		}
		if a.Pod != b.Pod {
			return a.Pod < b.Pod
		}
		if a.Container != b.Container {
			return a.Container < b.Container
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if a.Dev != b.Dev {
			return a.Dev < b.Dev
		}
		return a.Ino < b.Ino
	})
	return &accessv1.AccessWindow{
		Node:          node,
		StartUnixNano: start.UnixNano(),
		EndUnixNano:   end.UnixNano(),
		Files:         files,
		Dropped:       dropped,
	}, outside
}

// addRecord folds one record into a FileAccess. Two records meet in one
// FileAccess only when a container's processes run in nested cgroups.
func addRecord(fa *accessv1.FileAccess, r *bpf.Record, off clockOffset) {
	fa.ReadOps += r.ReadOps
	fa.ReadBytes += r.ReadBytes
	fa.WriteOps += r.WriteOps
	fa.WriteBytes += r.WriteBytes
	fa.SeqSteps += r.SeqSteps
	fa.RandSteps += r.RandSteps
	for i, n := range r.ReadSizeLog2 {
		fa.ReadSizeLog2[i] += n
	}
	for i, n := range r.ReadLatencyLog2 {
		fa.ReadLatencyLog2[i] += n
	}
	fa.ReadWaitNano += r.ReadWaitNs
	fa.PagesRequested += r.PagesRequested
	fa.PagesAdded += r.PagesAdded
	fa.MmapFaults += r.MmapFaults
	fa.MappedReadBytes += r.MappedReadBytes
	fa.ExecFaults += r.ExecFaults
	fa.DirectReads += r.DirectReads
	fa.Opens += r.Opens
	fa.Passes += r.Passes
	if first := off.wall(r.FirstNs); first != 0 && (fa.FirstAccessUnixNano == 0 || first < fa.FirstAccessUnixNano) {
		fa.FirstAccessUnixNano = first
	}
	if last := off.wall(r.LastNs); last > fa.LastAccessUnixNano {
		fa.LastAccessUnixNano = last
		fa.FileSize = int64(r.FileSize)
	}
	if lp := off.wall(r.LastPassNs); lp > fa.LastPassUnixNano {
		fa.LastPassUnixNano = lp
	}
	fa.MaxOffset = max(fa.MaxOffset, r.MaxOffset)
	if fa.FileSize == 0 {
		fa.FileSize = int64(r.FileSize)
	}
	addRanges(fa, r.Ranges)
}

// addRanges appends a record's read ranges, at most
// accessv1.MaxReadRanges in all, counting the rest as dropped.
func addRanges(fa *accessv1.FileAccess, rs []bpf.ReadRange) {
	if len(rs) == 0 {
		return
	}
	merged := len(fa.ReadRanges) > 0
	for _, rr := range rs {
		if len(fa.ReadRanges) >= accessv1.MaxReadRanges {
			fa.ReadRangesDropped++
			continue
		}
		fa.ReadRanges = append(fa.ReadRanges, &accessv1.ReadRange{Offset: rr.Offset, End: rr.End})
	}
	if merged {
		sort.Slice(fa.ReadRanges, func(i, j int) bool { return fa.ReadRanges[i].Offset < fa.ReadRanges[j].Offset })
	}
}

// trimZeros drops trailing empty histogram buckets; the protocol's buckets
// are positional, so the meaning is unchanged.
func trimZeros(h []uint64) []uint64 {
	n := len(h)
	for n > 0 && h[n-1] == 0 {
		n--
	}
	if n == 0 {
		return nil
	}
	return h[:n]
}

// maxRecommendations bounds the names taken from a pod's annotation, which
// whoever creates the pod can write.
const maxRecommendations = 8

// appliedRecommendations are the recommendations the webhook applied to the
// pod (its eddy.io/recommendation annotation), at most maxRecommendations
// valid object names.
func appliedRecommendations(pod *corev1.Pod) []string {
	v := pod.Annotations[eddyv1alpha1.RecommendationAnnotation]
	if v == "" {
		return nil
	}
	var out []string
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if len(out) == maxRecommendations {
			break
		}
		if len(validation.IsDNS1123Subdomain(name)) == 0 {
			out = append(out, name)
		}
	}
	return out
}
