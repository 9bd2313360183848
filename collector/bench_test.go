package collector

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/eddy-autotune/eddy/bpf"
)

// BenchmarkTick measures one drain of a busy node: 100 pods of one
// Deployment, each with 500 files read in the interval, attributed to pod,
// workload and dataset, aggregated, metered and stored durably for shipping.
// It reports the cost per record and the encoded window size.
func BenchmarkTick(b *testing.B) {
	const pods, filesPerPod = 100, 500
	src := NewReplaySource()
	attr := staticPods{}
	var records []bpf.Record
	var events []bpf.FileEvent
	for i := range pods {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: fmt.Sprintf("train-%d", i), UID: types.UID(fmt.Sprintf("uid-%d", i)),
				OwnerReferences: []metav1.OwnerReference{ctrl("apps/v1", "ReplicaSet", "train-5d8f7c9b6a")}},
			Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "main", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
				Volumes:    []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "imagenet"}}}},
			},
		}
		cg := uint64(1000 + i)
		attr[cg] = &PodContainer{Pod: pod, Container: "main", CgroupID: cg}
		if err := src.Allow(cg); err != nil {
			b.Fatal(err)
		}
		for f := range filesPerPod {
			k := bpf.FileKey{CgroupID: cg, Dev: 0x800001, Ino: uint64(f)}
			r := bpf.Record{Key: k, ReadOps: 4, ReadBytes: 4 << 17, SeqSteps: 3, FirstNs: 1e9, LastNs: 2e9, FileSize: 4 << 17}
			r.ReadSizeLog2[17] = 4
			r.ReadLatencyLog2[14] = 4
			records = append(records, r)
			events = append(events, bpf.FileEvent{Key: k, Path: fmt.Sprintf("/data/train/n%05d/img_%d.JPEG", f/100, f)})
		}
	}
	calls := 0
	sink := openShipper(b)
	c, err := New(Options{
		Node: "n", Source: src, Pods: attr, Sink: sink, Metrics: NewMetrics(0),
		Workloads: owners{"ReplicaSet/train-5d8f7c9b6a": {ctrl("apps/v1", "Deployment", "train")}}.resolver(&calls),
		Datasets:  NewDatasetResolver(nil, nil, 0),
	})
	if err != nil {
		b.Fatal(err)
	}
	src.Push(nil, events)
	ctx := context.Background()
	b.ResetTimer()
	size := 0
	for range b.N {
		src.Push(records, nil)
		w, err := c.Tick(ctx)
		if err != nil {
			b.Fatal(err)
		}
		size = proto.Size(w)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(records)), "ns/record")
	b.ReportMetric(float64(size), "window-bytes")
}
