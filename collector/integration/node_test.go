package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/eddy-autotune/eddy/test/loopbackcert"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/bpf"
	"github.com/eddy-autotune/eddy/collector"
	"github.com/eddy-autotune/eddy/internal/cgroupv2"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

// intake is an analyzer's AccessIntake that keeps every window it applies
// (once per sequence, as the protocol requires).
type intake struct {
	accessv1.UnimplementedAccessIntakeServer
	mu      sync.Mutex
	acked   map[string]uint64
	windows []*accessv1.AccessWindow
	auth    []string
}

func (in *intake) Ship(ctx context.Context, req *accessv1.ShipRequest) (*accessv1.ShipReply, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	in.auth = md.Get(accessv1.AuthorizationMetadata)
	for _, w := range req.Windows {
		if w.Sequence <= in.acked[req.Collector] {
			continue
		}
		in.windows = append(in.windows, w)
		in.acked[req.Collector] = w.Sequence
	}
	return &accessv1.ShipReply{AckedSequence: in.acked[req.Collector]}, nil
}

// files returns every FileAccess received so far.
func (in *intake) files() []*accessv1.FileAccess {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []*accessv1.FileAccess
	for _, w := range in.windows {
		out = append(out, w.Files...)
	}
	return out
}

func (in *intake) dropped() (unattributed uint64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, w := range in.windows {
		unattributed += w.GetDropped().GetUnattributedRecords()
	}
	return unattributed
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// simPod is a pod object in the API server plus the container cgroup a
// kubelet would have made for it: <cgroup2>/kubepods/besteffort/pod<UID>/<id>.
type simPod struct {
	pod   *corev1.Pod
	group *cgroupv2.Group
}

func createPod(ctx context.Context, t *testing.T, c client.Client, pod *corev1.Pod) simPod {
	t.Helper()
	require.NoError(t, c.Create(ctx, pod))
	ctrID := randomHex(t, 32)
	now := metav1.Now()
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning,
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: pod.Spec.Containers[0].Name, ContainerID: "containerd://" + ctrID, Ready: true,
			Image: pod.Spec.Containers[0].Image, ImageID: "sha256:" + randomHex(t, 32),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	require.NoError(t, c.Status().Update(ctx, pod))
	podDir := "kubepods/besteffort/pod" + string(pod.UID)
	g, err := cgroupv2.Create(podDir, ctrID)
	require.NoError(t, err)
	t.Cleanup(func() {
		parent := &cgroupv2.Group{Path: filepath.Dir(g.Path)}
		if err := parent.Remove(); err != nil {
			t.Errorf("remove pod cgroup: %v", err)
		}
	})
	return simPod{pod: pod, group: g}
}

// run starts sh -c script inside the pod's container cgroup, in dir.
func (p simPod) run(t *testing.T, dir, script string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	require.NoError(t, p.group.Start(cmd))
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// TestNodeCollectorEndToEnd runs the collector against the real kernel and a
// real API server: processes in simulated pod cgroups read files, and the
// analyzer receives windows that name the right pod, workload and dataset,
// while pods that did not opt in leave no trace.
func TestNodeCollectorEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads eBPF programs and creates cgroups")
	}
	mount, err := cgroupv2.Mountpoint()
	if err != nil {
		t.Skipf("no cgroup2 mount: %v", err)
	}
	if _, err := bpf.EnsureTraceFS(); err != nil {
		t.Fatalf("the collector's syscall hooks need tracefs: %v", err)
	}
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	c := env.Client
	node := "node-it-" + randomHex(t, 3)

	on := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "eddy-on", Labels: map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled}}}
	off := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "eddy-off"}}
	require.NoError(t, c.Create(ctx, on))
	require.NoError(t, c.Create(ctx, off))

	// The data: a Fluid-managed claim mounted at <tmp>/data in the reader.
	// Processes here share the host's mount namespace, so the path a
	// container would see is the host path.
	dataDir := filepath.Join(t.TempDir(), "data")
	require.NoError(t, os.MkdirAll(filepath.Join(dataDir, "train"), 0o755))
	big := filepath.Join(dataDir, "train", "big.bin")
	const bigSize = 8 << 20
	require.NoError(t, os.WriteFile(big, make([]byte, bigSize), 0o644))
	labelsTxt := strings.Repeat("n01440764 tench\n", 256)
	require.NoError(t, os.WriteFile(filepath.Join(dataDir, "labels.txt"), []byte(labelsTxt), 0o644))
	fs := "fluid"
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: on.Name, Name: "imagenet", Labels: map[string]string{
			"fluid.io/dataset-id": on.Name + "-imagenet", "fluid.io/s-" + on.Name + "-imagenet": "true"}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
			StorageClassName: &fs,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	require.NoError(t, c.Create(ctx, claim))

	// A Deployment and its ReplicaSet, as the controllers would have made them.
	labels := map[string]string{"app": "reader"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: on.Name, Name: "reader"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "reader:1"}}}},
		},
	}
	require.NoError(t, c.Create(ctx, deploy))
	isController := true
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: on.Name, Name: "reader-5d8f7c9b6a", Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: deploy.Name, UID: deploy.UID, Controller: &isController}}},
		Spec: appsv1.ReplicaSetSpec{Selector: deploy.Spec.Selector, Template: deploy.Spec.Template},
	}
	require.NoError(t, c.Create(ctx, rs))

	podSpec := func(mounts bool) corev1.PodSpec {
		spec := corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "main", Image: "reader:1"}}}
		if mounts {
			spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: dataDir}}
			spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim.Name}}}}
		}
		return spec
	}
	reader := createPod(ctx, t, c, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: on.Name, Name: "reader-5d8f7c9b6a-x7k2p", Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &isController}}},
		Spec: podSpec(true),
	})
	optedOut := createPod(ctx, t, c, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: on.Name, Name: "opted-out", Labels: map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneDisabled}},
		Spec:       podSpec(true),
	})
	outside := createPod(ctx, t, c, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: off.Name, Name: "outside"},
		Spec:       podSpec(false),
	})
	// A namespace that opts in while its pod already holds a file open.
	later := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "eddy-later"}}
	require.NoError(t, c.Create(ctx, later))
	laterClaim := claim.DeepCopy()
	laterClaim.ObjectMeta = metav1.ObjectMeta{Namespace: later.Name, Name: claim.Name}
	laterClaim.Spec.StorageClassName = nil
	require.NoError(t, c.Create(ctx, laterClaim))
	early := createPod(ctx, t, c, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: later.Name, Name: "early"},
		Spec:       podSpec(true),
	})
	valTxt := strings.Repeat("n01443537 goldfish\n", 128)
	require.NoError(t, os.WriteFile(filepath.Join(dataDir, "val.txt"), []byte(valTxt), 0o644))
	valInfo, err := os.Stat(filepath.Join(dataDir, "val.txt"))
	require.NoError(t, err)
	valIno := valInfo.Sys().(*syscall.Stat_t).Ino

	// The analyzer's side over TLS; the collector must present its token.
	// (The analyzer's own checks of that token are tested in
	// analyzer/intake against a real API server.)
	in := &intake{acked: map[string]uint64{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	tlsDir := t.TempDir()
	certFile, keyFile, err := loopbackcert.Write(tlsDir)
	require.NoError(t, err)
	creds, err := credentials.NewServerTLSFromFile(certFile, keyFile)
	require.NoError(t, err)
	tokenFile := filepath.Join(tlsDir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("the-collector-token\n"), 0o600))
	srv := grpc.NewServer(grpc.Creds(creds))
	accessv1.RegisterAccessIntakeServer(srv, in)
	go srv.Serve(lis)
	defer srv.Stop()

	metrics := collector.NewMetrics(0)
	ready := make(chan struct{})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- collector.RunNode(runCtx, collector.NodeConfig{
			Node: node, Kube: env.Config, AnalyzerAddress: lis.Addr().String(), TokenFile: tokenFile, AnalyzerCA: certFile,
			Interval: 300 * time.Millisecond, StateDir: t.TempDir(), CgroupRoot: mount,
			Metrics: metrics, OnReady: func() { close(ready) }, Log: testLogger(t),
		})
	}()
	defer func() {
		stop()
		assert.NoError(t, <-done)
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("collector stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("collector not ready after 30s")
	}

	// early opens val.txt now, before its namespace opts in, and reads it
	// only after: the kernel then announces the file without a path.
	goFile := filepath.Join(t.TempDir(), "go")
	early.run(t, dataDir, "exec 3< val.txt; while [ ! -e "+goFile+" ]; do sleep 0.05; done; while read -r l; do :; done <&3; sleep 3")

	// The reader: 8 reads of 1 MiB by absolute path, then a shell that reads
	// labels.txt by a relative path and stays alive a moment, so its cwd can
	// still be read when the path is resolved.
	require.NoError(t, reader.run(t, "/", "exec dd if="+big+" of=/dev/null bs=1M count=8 status=none").Wait())
	reader.run(t, dataDir, "while read -r l; do :; done < labels.txt; sleep 3")
	// The same reads where nothing may be recorded.
	require.NoError(t, optedOut.run(t, "/", "exec dd if="+big+" of=/dev/null bs=1M count=8 status=none").Wait())
	require.NoError(t, outside.run(t, "/", "exec dd if="+big+" of=/dev/null bs=1M count=8 status=none").Wait())

	byPath := func() map[string]*accessv1.FileAccess {
		sum := map[string]*accessv1.FileAccess{}
		for _, f := range in.files() {
			if f.Pod != reader.pod.Name {
				continue
			}
			s := sum[f.Path]
			if s == nil {
				s = &accessv1.FileAccess{Workload: f.Workload, Dataset: f.Dataset, Pod: f.Pod, PodUid: f.PodUid, Container: f.Container, Path: f.Path, FileSize: f.FileSize}
				sum[f.Path] = s
			}
			s.ReadBytes += f.ReadBytes
			s.ReadOps += f.ReadOps
			s.SeqSteps += f.SeqSteps
			s.RandSteps += f.RandSteps
		}
		return sum
	}
	require.Eventually(t, func() bool {
		s := byPath()
		return s["train/big.bin"] != nil && s["train/big.bin"].ReadBytes >= bigSize && s["labels.txt"] != nil
	}, 20*time.Second, 100*time.Millisecond, "reader's windows never showed both files: %v", byPath())
	// A few more windows, so anything still counted would show up.
	time.Sleep(time.Second)

	sum := byPath()
	bigFA := sum["train/big.bin"]
	assert.Equal(t, uint64(bigSize), bigFA.ReadBytes)
	assert.Equal(t, uint64(8), bigFA.ReadOps)
	assert.Equal(t, int64(bigSize), bigFA.FileSize)
	assert.Equal(t, string(reader.pod.UID), bigFA.PodUid)
	assert.Equal(t, "main", bigFA.Container)
	assertProto(t, &accessv1.WorkloadRef{Namespace: on.Name, Kind: "Deployment", ApiVersion: "apps/v1", Name: "reader", Rule: "Object", Object: "reader"}, bigFA.Workload)
	assertProto(t, &accessv1.DatasetRef{Namespace: on.Name, Name: "imagenet", Source: "Fluid", Pvc: "imagenet"}, bigFA.Dataset)
	assert.Equal(t, uint64(len(labelsTxt)), sum["labels.txt"].ReadBytes, "labels.txt read through a relative path")
	assertProto(t, bigFA.Dataset, sum["labels.txt"].Dataset)
	t.Logf("reader: big.bin %d bytes in %d reads (seq %d, rand %d); labels.txt %d bytes in %d reads",
		bigFA.ReadBytes, bigFA.ReadOps, bigFA.SeqSteps, bigFA.RandSteps, sum["labels.txt"].ReadBytes, sum["labels.txt"].ReadOps)

	for _, f := range in.files() {
		assert.Equal(t, reader.pod.Name, f.Pod, "only the opted-in pod may be recorded, got %s/%s %s", f.Workload.GetNamespace(), f.Pod, f.Path)
	}
	assert.Zero(t, in.dropped(), "records the collector could not attribute")
	in.mu.Lock()
	assert.Equal(t, []string{"Bearer the-collector-token"}, in.auth, "every call carries the collector's token, over TLS")
	in.mu.Unlock()

	got := metricValue(t, metrics, "eddy_collector_read_bytes_total", map[string]string{
		"namespace": on.Name, "pod": reader.pod.Name, "workload_kind": "Deployment", "workload": "reader", "dataset": "imagenet"})
	assert.Equal(t, float64(bigSize+len(labelsTxt)), got)

	// Opting eddy-later in picks up early's container; its read of the file
	// opened earlier is found by the open descriptor.
	var ns corev1.Namespace
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: later.Name}, &ns))
	ns.Labels = map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled}
	require.NoError(t, c.Update(ctx, &ns))
	require.Eventually(t, func() bool {
		return metricValue(t, metrics, "eddy_collector_observed_containers", nil) == 2
	}, 20*time.Second, 50*time.Millisecond, "early's container never joined the allow-list")
	require.NoError(t, os.WriteFile(goFile, nil, 0o644))
	var val *accessv1.FileAccess
	require.Eventually(t, func() bool {
		val = nil
		for _, f := range in.files() {
			if f.Pod == early.pod.Name && f.Ino == valIno {
				if val == nil {
					val = proto.Clone(f).(*accessv1.FileAccess)
					continue
				}
				val.ReadBytes += f.ReadBytes
			}
		}
		return val != nil && val.ReadBytes >= uint64(len(valTxt))
	}, 20*time.Second, 100*time.Millisecond, "early's read of val.txt never showed up")
	assert.Equal(t, "val.txt", val.Path)
	assert.Equal(t, uint64(len(valTxt)), val.ReadBytes)
	assertProto(t, &accessv1.DatasetRef{Namespace: later.Name, Name: "imagenet", Source: "PVC", Pvc: "imagenet"}, val.Dataset)
	assertProto(t, &accessv1.WorkloadRef{Namespace: later.Name, Kind: "Pod", ApiVersion: "v1", Name: "early", Rule: "Object", Object: "early"}, val.Workload)

	// Deleting the reader takes its cgroup off the kernel's allow-list:
	// what its processes read afterwards is not recorded.
	require.NoError(t, c.Delete(ctx, reader.pod, client.GracePeriodSeconds(0)))
	before := len(in.files())
	time.Sleep(time.Second)
	require.NoError(t, reader.run(t, "/", "exec dd if="+big+" of=/dev/null bs=1M count=8 status=none").Wait())
	time.Sleep(time.Second)
	for _, f := range in.files()[before:] {
		assert.NotEqual(t, reader.pod.Name, f.Pod, "read after the pod was deleted was recorded")
	}
	assert.Zero(t, in.dropped())

	// The per-syscall and page-cache programs are attached only while an
	// opted-in container is observed: early still is; once it goes, only
	// the cgroup and thread exit hooks stay.
	attached := func() float64 { return metricValue(t, metrics, "eddy_collector_programs_attached", nil) }
	observing := attached()
	assert.Greater(t, observing, 3.0, "programs attached while early is observed")
	require.NoError(t, c.Delete(ctx, early.pod, client.GracePeriodSeconds(0)))
	require.Eventually(t, func() bool { return attached() == 3 }, 10*time.Second, 50*time.Millisecond,
		"with no observed container only the cgroup and thread exit hooks stay attached: %v attached", attached())

	// A pod that starts on the node while the programs are detached: its
	// cgroup, allowed as the kubelet makes it, attaches them before its
	// container exists, so the container's first reads are recorded, and
	// attributed once the kubelet's status names it.
	late := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: on.Name, Name: "late"}, Spec: podSpec(true)}
	require.NoError(t, c.Create(ctx, late))
	lateGroup, err := cgroupv2.Create("kubepods/besteffort", "pod"+string(late.UID))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, lateGroup.Remove()) })
	t0 := time.Now()
	require.Eventually(t, func() bool { return attached() > 3 }, 10*time.Second, 20*time.Millisecond,
		"the pod's cgroup never attached the programs")
	t.Logf("programs attached (seen in the metrics) %v after the pod's cgroup appeared", time.Since(t0))
	lateID := randomHex(t, 32)
	ctrGroup, err := cgroupv2.Create(filepath.Join("kubepods/besteffort", "pod"+string(late.UID)), lateID)
	require.NoError(t, err)
	lateCtr := simPod{pod: late, group: ctrGroup}
	require.NoError(t, lateCtr.run(t, "/", "exec dd if="+big+" of=/dev/null bs=1M count=8 status=none").Wait())
	late.Status = corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "main", ContainerID: "containerd://" + lateID, Ready: true, Image: "reader:1", ImageID: "sha256:" + randomHex(t, 32),
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
	}}}
	require.NoError(t, c.Status().Update(ctx, late))
	lateBytes := func() (n uint64) {
		for _, f := range in.files() {
			if f.Pod == late.Name && f.Path == "train/big.bin" {
				n += f.ReadBytes
			}
		}
		return n
	}
	require.Eventually(t, func() bool { return lateBytes() >= bigSize }, 20*time.Second, 100*time.Millisecond,
		"the late pod's first reads were not all recorded: %d bytes", lateBytes())
	assert.Equal(t, uint64(bigSize), lateBytes())
	require.NoError(t, c.Delete(ctx, late, client.GracePeriodSeconds(0)))
	require.Eventually(t, func() bool { return attached() == 3 }, 10*time.Second, 50*time.Millisecond,
		"the late pod gone (its cgroups still there, as the kubelet leaves them a moment), the programs detach: %v attached", attached())
	assert.Zero(t, in.dropped())
}

func testLogger(t *testing.T) logr.Logger {
	return testr.NewWithOptions(t, testr.Options{Verbosity: 1})
}

// metricValue returns the value of the series of name with exactly labels.
func metricValue(t *testing.T, c prometheus.Collector, name string, labels map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(c))
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// assertProto compares messages by content.
func assertProto(t *testing.T, want, got proto.Message) {
	t.Helper()
	assert.True(t, proto.Equal(want, got), "want %v\ngot  %v", want, got)
}
