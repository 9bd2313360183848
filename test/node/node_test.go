package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/test/node"
	"github.com/eddy-autotune/eddy/test/node/workload"
)

const ns = "eddy-e2e"

// testImages are the images the real-node test runs; the eddy image is
// covered by TestBuildImages.
var testImages = []string{"pause", "workload"}

// TestRealNode brings up the control plane with a real node, runs real pods
// (a native sidecar serving what the main container read from two PVCs,
// behind a Service; a pod using its service-account token), tears it all
// down and checks nothing is left, then measures a warm start.
func TestRealNode(t *testing.T) {
	node.SkipUnlessAvailable(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("/tmp", "eddy-node-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	start := time.Now()
	c, err := node.Start(ctx, node.Options{Dir: dir, KwokNodes: 1, RemoteDatasets: true, Images: testImages, Log: node.TestLog(t)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	cold := time.Since(start)
	t.Logf("cluster with a real node up (cold) in %.1fs, DNS %v", cold.Seconds(), c.DNS)
	stopped := false
	defer func() {
		if !stopped {
			_ = c.Stop()
		}
	}()

	local, err := c.AddLocalDataset(ctx, ns, "local", func(d string) error { return workload.WriteSample(d, 48, 64<<10, 0) })
	if err != nil {
		t.Fatal(err)
	}
	remote, err := c.AddRemoteDataset(ctx, ns, "remote", func(d string) error { return workload.WriteSample(d, 4, 256<<10, 16<<20) },
		node.RemoteOptions{Delay: 2 * time.Millisecond, Bandwidth: 40 << 20})
	if err != nil {
		t.Fatal(err)
	}

	var podUIDs []string
	t.Run("sidecar, PVCs and a Service", func(t *testing.T) {
		uid := testReaderBehindService(ctx, t, c, local, remote)
		podUIDs = append(podUIDs, uid)
	})
	t.Run("service-account token", func(t *testing.T) {
		podUIDs = append(podUIDs, testServiceAccountToken(ctx, t, c))
	})

	stopStart := time.Now()
	err = c.Stop()
	stopped = true
	if err != nil {
		t.Fatalf("teardown: %v", err)
	}
	t.Logf("teardown in %.1fs", time.Since(stopStart).Seconds())
	assertNothingLeft(t, dir, podUIDs)

	start = time.Now()
	c2, err := node.Start(ctx, node.Options{Dir: dir, KwokNodes: 1, Images: testImages, Log: node.TestLog(t)})
	if err != nil {
		t.Fatalf("warm start: %v", err)
	}
	warm := time.Since(start)
	if err := c2.Stop(); err != nil {
		t.Fatalf("teardown after the warm start: %v", err)
	}
	assertNothingLeft(t, dir, nil)
	t.Logf("cluster with a real node up: cold %.1fs, warm %.1fs", cold.Seconds(), warm.Seconds())
}

// testReaderBehindService runs a pod whose main container reads both
// datasets and whose native sidecar serves the reports, behind a Service,
// and checks from the host, through the ClusterIP, that the pod read exactly
// the bytes on the host. It returns the pod's UID.
func testReaderBehindService(ctx context.Context, t *testing.T, c *node.Cluster, local, remote *node.Dataset) string {
	always := corev1.ContainerRestartPolicyAlways
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reader", Labels: map[string]string{"app": "reader"}},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{node.NodeLabel: "real"},
			InitContainers: []corev1.Container{{
				Name: "server", Image: node.WorkloadImage, ImagePullPolicy: corev1.PullNever,
				RestartPolicy: &always,
				Command:       []string{"eddy-workload", "serve", "--addr", ":8080", "--dir", "/out"},
				Ports:         []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				VolumeMounts:  []corev1.VolumeMount{{Name: "out", MountPath: "/out"}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
			}},
			Containers: []corev1.Container{{
				Name: "reader", Image: node.WorkloadImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", "eddy-workload read --dir /data/local --pattern smallfiles --report /out/local.json && " +
					"eddy-workload read --dir /data/remote --pattern sequential --report /out/remote.json --hold"},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "out", MountPath: "/out"},
					{Name: "local", MountPath: "/data/local", ReadOnly: true},
					{Name: "remote", MountPath: "/data/remote", ReadOnly: true},
				},
				// An exec probe goes through `runc exec --process`, the wrapper's second path.
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
					Command: []string{"cat", "/out/remote.json"}}}, PeriodSeconds: 1},
			}},
			Volumes: []corev1.Volume{
				{Name: "out", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "local", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: local.Claim, ReadOnly: true}}},
				{Name: "remote", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: remote.Claim, ReadOnly: true}}},
			},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reader"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "reader"},
			// A number: kube-controller-manager 1.31 resolves named ports
			// only in regular containers, not in native sidecars.
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	start := time.Now()
	for _, o := range []client.Object{pod, svc} {
		if err := c.Env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s: %v", o.GetName(), err)
		}
	}
	waitPod(ctx, t, c, pod, 3*time.Minute, func(p *corev1.Pod) bool {
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
	t.Logf("pod %s Ready in %.1fs on %s (%s)", pod.Name, time.Since(start).Seconds(), pod.Spec.NodeName, pod.Status.PodIP)
	if pod.Spec.NodeName != c.NodeName {
		t.Fatalf("pod ran on %s, want the real node %s", pod.Spec.NodeName, c.NodeName)
	}
	if st := pod.Status.InitContainerStatuses; len(st) != 1 || st[0].State.Running == nil || !st[0].Ready {
		t.Fatalf("native sidecar not running and ready: %+v", st)
	}
	// The kubelet's cgroupfs layout, which the collector maps to pods and
	// the teardown check below relies on.
	if cgs, _ := filepath.Glob("/sys/fs/cgroup/*/" + node.KubeletCgroupRoot + "/kubepods/besteffort/pod" + string(pod.UID)); len(cgs) == 0 {
		t.Errorf("no cgroup eddy-node/kubepods/besteffort/pod%s in any hierarchy while the pod runs", pod.UID)
	}
	if err := c.Env.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}

	defer func() {
		if !t.Failed() {
			return
		}
		// The files from the pod itself, past the Service: tells a routing
		// fault from the pod's.
		for _, file := range []string{"local.json", "remote.json"} {
			direct := fmt.Sprintf("http://%s:8080/%s", pod.Status.PodIP, file)
			if resp, err := (&http.Client{Timeout: 3 * time.Second}).Get(direct); err != nil {
				t.Logf("GET %s (the pod, not the Service): %v", direct, err)
			} else {
				resp.Body.Close()
				t.Logf("GET %s (the pod, not the Service): HTTP %d", direct, resp.StatusCode)
			}
		}
		// Without kube-proxy's rule the host's own route answers (here an
		// egress proxy: 404, empty body).
		rules, _ := exec.CommandContext(ctx, "iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES").CombinedOutput()
		t.Logf("kube-proxy's rule for %s: %q", svc.Spec.ClusterIP, grepLines(string(rules), svc.Spec.ClusterIP))
		proxyLog, _ := os.ReadFile(filepath.Join(c.Dir, "logs", "kube-proxy.log"))
		t.Logf("kube-proxy log ends:\n%s", tailLines(string(proxyLog), 30))
	}()
	for _, tc := range []struct {
		file   string
		source string
		want   workload.Pattern
	}{
		{"local.json", local.Source, workload.SmallFilesShuffled},
		{"remote.json", remote.Source, workload.Sequential},
	} {
		url := fmt.Sprintf("http://%s:80/%s", svc.Spec.ClusterIP, tc.file)
		body := httpGetRetry(ctx, t, url, 60*time.Second)
		var got workload.Report
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("GET %s: not a report: %v: %s", url, err, body)
		}
		want, err := workload.Read(tc.source, workload.Sequential, workload.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Pattern != tc.want || got.Files != want.Files || got.Bytes != want.Bytes || got.Digest != want.Digest {
			t.Errorf("GET %s (through the ClusterIP): pod read %s %d files, %d bytes, digest %.12s; host has %d files, %d bytes, digest %.12s",
				url, got.Pattern, got.Files, got.Bytes, got.Digest, want.Files, want.Bytes, want.Digest)
		} else {
			t.Logf("GET %s: the pod read %d files, %d bytes (%s) in %.2fs, digest matches the host", url, got.Files, got.Bytes, got.Pattern, got.Seconds)
		}
	}
	return string(pod.UID)
}

// testServiceAccountToken runs a pod under its own service account, with a
// Role that lets it list pods and nothing else, and checks what the API
// server made of its token. It returns the pod's UID.
func testServiceAccountToken(ctx context.Context, t *testing.T, c *node.Cluster) string {
	objs := []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pod-reader"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe-pod-reader"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "pod-reader"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "probe"}}},
	}
	args := []string{"whoami"}
	if c.DNS {
		// By name: cluster DNS and the serving certificate's names.
		args = append(args, "--server", "https://kubernetes.default.svc")
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "whoami"},
		Spec: corev1.PodSpec{
			NodeSelector:       map[string]string{node.NodeLabel: "real"},
			ServiceAccountName: "probe",
			RestartPolicy:      corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "whoami", Image: node.WorkloadImage, ImagePullPolicy: corev1.PullNever,
				Command: append([]string{"eddy-workload"}, args...),
			}},
		},
	}
	for _, o := range append(objs, pod) {
		if err := c.Env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s: %v", o.GetName(), err)
		}
	}
	waitPod(ctx, t, c, pod, 2*time.Minute, func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	})
	if len(pod.Status.ContainerStatuses) != 1 || pod.Status.ContainerStatuses[0].State.Terminated == nil {
		t.Fatalf("whoami: no termination status: %+v", pod.Status)
	}
	msg := pod.Status.ContainerStatuses[0].State.Terminated.Message
	if pod.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("whoami failed: %s", msg)
	}
	var got struct {
		Server   string         `json:"server"`
		Username string         `json:"username"`
		Status   map[string]int `json:"status"`
	}
	if err := json.Unmarshal([]byte(msg), &got); err != nil {
		t.Fatalf("whoami's termination message is not its report: %v: %q", err, msg)
	}
	wantUser := "system:serviceaccount:" + ns + ":probe"
	if got.Username != wantUser || got.Status["list pods"] != http.StatusOK || got.Status["list secrets"] != http.StatusForbidden {
		t.Fatalf("pod's token: user %q, list pods %d, list secrets %d; want %q, 200, 403", got.Username, got.Status["list pods"], got.Status["list secrets"], wantUser)
	}
	t.Logf("pod authenticated to %s as %s; RBAC allowed list pods, denied list secrets", got.Server, got.Username)

	// kubectl logs: the API server reaches the kubelet with its client certificate.
	logs, err := c.Env.Kubectl(ctx, "logs", "-n", ns, "whoami")
	if err != nil {
		t.Fatalf("kubectl logs (API server → kubelet): %v", err)
	}
	if !strings.Contains(logs, wantUser) {
		t.Fatalf("kubectl logs whoami: %q does not name %s", logs, wantUser)
	}
	return string(pod.UID)
}

func waitPod(ctx context.Context, t *testing.T, c *node.Cluster, pod *corev1.Pod, timeout time.Duration, done func(*corev1.Pod) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if err := c.Env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err == nil && done(pod) {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			events, _ := c.Env.Kubectl(context.Background(), "get", "events", "-n", pod.Namespace, "--sort-by=.lastTimestamp")
			status, _ := json.MarshalIndent(pod.Status, "", "  ")
			t.Fatalf("pod %s/%s not done after %s; status:\n%s\nevents:\n%s\nkubelet log: %s", pod.Namespace, pod.Name, timeout,
				status, events, filepath.Join(c.Dir, "logs", "kubelet.log"))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func httpGetRetry(ctx context.Context, t *testing.T, url string, timeout time.Duration) []byte {
	t.Helper()
	hc := &http.Client{Timeout: 3 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := hc.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return body
			}
			// Who answered: the pod's file server says "404 page not
			// found"; another server (a stale route) says otherwise.
			err = fmt.Errorf("HTTP %d (Server %q, Content-Type %q, %d-byte body): %s", resp.StatusCode,
				resp.Header.Get("Server"), resp.Header.Get("Content-Type"), len(body), body)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("GET %s from the host: %v", url, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// assertNothingLeft checks, independently of Teardown's own check, that no
// node process, mount, bridge or pod cgroup is left.
func assertNothingLeft(t *testing.T, dir string, podUIDs []string) {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		name := strings.TrimSpace(string(comm))
		switch {
		case name == "containerd", name == "kubelet", name == "kube-proxy", name == "coredns", strings.HasPrefix(name, "containerd-shim"), name == "rclone":
			if strings.Contains(string(cmdline), dir) {
				t.Errorf("process %s (%s) still running: %s", e.Name(), name, strings.ReplaceAll(string(cmdline), "\x00", " "))
			}
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, " "+dir) {
			t.Errorf("mount left: %s", line)
		}
	}
	if _, err := os.Stat("/sys/class/net/" + node.BridgeName); err == nil {
		t.Errorf("network device %s left", node.BridgeName)
	}
	for _, uid := range podUIDs {
		matches, _ := filepath.Glob("/sys/fs/cgroup/*/" + node.KubeletCgroupRoot + "/kubepods/*/pod" + uid)
		more, _ := filepath.Glob("/sys/fs/cgroup/*/" + node.KubeletCgroupRoot + "/kubepods/pod" + uid)
		for _, m := range append(matches, more...) {
			t.Errorf("cgroup left: %s", m)
		}
	}
	if chains := node.Leftovers(context.Background(), dir, podUIDs, nil); len(chains) > 0 {
		for _, l := range chains {
			if strings.Contains(l, " chain ") || strings.HasPrefix(l, "cgroup") {
				t.Errorf("left: %s", l)
			}
		}
	}
}
