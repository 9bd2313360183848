package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	manifestv1 "github.com/eddy-autotune/eddy/api/manifest/v1"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/internal/cgroupv2"
	"github.com/eddy-autotune/eddy/prefetch"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

// writeServiceAccount writes what a kubelet projects into the prefetcher at
// webhook.ManifestTokenDir: a token of the pod's service account with the
// manifest endpoint's audience, bound to the pod (TokenRequest API), and the
// CA to trust (here, the analyzer's serving certificate). It returns the
// folder.
func (r *run) writeServiceAccount(ctx context.Context, pod *corev1.Pod, caFile string) (string, error) {
	sa := &corev1.ServiceAccount{}
	sa.Name, sa.Namespace = pod.Spec.ServiceAccountName, pod.Namespace
	if sa.Name == "" {
		sa.Name = "default"
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{manifestv1.Audience},
		ExpirationSeconds: ptr.To[int64](3600),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if err := r.env.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
		return "", fmt.Errorf("token for service account %s/%s: %w", sa.Namespace, sa.Name, err)
	}
	dir := filepath.Join(r.o.Dir, "pods", pod.Name, "serviceaccount")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o644); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "token"), []byte(tr.Status.Token), 0o600)
}

// collectorToken writes the token the collector proves itself with to the
// analyzer, as the kubelet projects it into the collector's pod: a token of
// service account eddy-system/eddy-collector with the intake's audience,
// bound to a collector pod on the demo's node (the pod object only: the
// collector runs as a process here).
func (r *run) collectorToken(ctx context.Context) (string, error) {
	c := r.env.Client
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "eddy-collector", Namespace: System}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "eddy-collector-" + NodeName, Namespace: System},
		Spec: corev1.PodSpec{NodeName: NodeName, ServiceAccountName: sa.Name,
			Containers: []corev1.Container{{Name: "collector", Image: "eddy.local/eddy:dev"}}},
	}
	for _, o := range []client.Object{sa, pod} {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{accessv1.Audience},
		ExpirationSeconds: ptr.To[int64](48 * 3600),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if err := c.SubResource("token").Create(ctx, sa, tr); err != nil {
		return "", fmt.Errorf("token for the collector: %w", err)
	}
	path := filepath.Join(r.o.Dir, "collector", "token")
	return path, os.WriteFile(path, []byte(tr.Status.Token), 0o600)
}

// hostPaths maps each path a container of the pod sees its volumes at to
// where that volume is on this machine: a PVC where the application
// container mounts it (the demo mounts PVCs at their host path), any other
// volume (the SDK's emptyDir) to a folder of its own under DIR/pods.
func (r *run) hostPaths(pod *corev1.Pod, ctr *corev1.Container) (map[string]string, error) {
	pvcAt := map[string]string{}
	for _, c := range pod.Spec.Containers {
		for _, m := range c.VolumeMounts {
			pvcAt[m.Name] = m.MountPath
		}
	}
	isPVC := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		isPVC[v.Name] = v.PersistentVolumeClaim != nil
	}
	out := map[string]string{}
	for _, m := range ctr.VolumeMounts {
		if host, ok := pvcAt[m.Name]; ok && isPVC[m.Name] {
			out[m.MountPath] = host
			continue
		}
		dir := filepath.Join(r.o.Dir, "pods", pod.Name, "volumes", m.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		out[m.MountPath] = dir
	}
	return out, nil
}

// mapArgs rewrites the container paths in flag values (--root=/eddy/data/v,
// --path-alias=APP=ROOT, --hint-socket=...) to their host paths; other
// values (the manifest URL) are left alone.
func mapArgs(args []string, paths map[string]string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		flag, value, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(flag, "--") {
			out = append(out, a)
			continue
		}
		parts := strings.Split(value, "=")
		for i, p := range parts {
			parts[i] = mapPath(p, paths)
		}
		out = append(out, flag+"="+strings.Join(parts, "="))
	}
	return out
}

// mapPath maps p by its longest container-path prefix (whole components).
func mapPath(p string, paths map[string]string) string {
	best := ""
	for from := range paths {
		if (p == from || strings.HasPrefix(p, from+"/")) && len(from) > len(best) {
			best = from
		}
	}
	if best == "" {
		return p
	}
	return paths[best] + strings.TrimPrefix(p, best)
}

// prefetchRun is what the injected prefetcher did before the reader ran.
type prefetchRun struct {
	Seconds float64
	Status  prefetch.Status
}

// runSidecar runs the pod's injected eddy-prefetch container as the pod
// would, in its cgroup g, and waits until it reports everything read.
func (r *run) runSidecar(ctx context.Context, pod *corev1.Pod, ctr *corev1.Container, g *cgroupv2.Group, saDir string) (*prefetchRun, error) {
	wait, err := r.startSidecar(ctx, pod, ctr, g, saDir)
	if err != nil {
		return nil, err
	}
	return wait()
}

// startSidecar starts the pod's prefetch sidecar as runSidecar does and
// returns a function that waits until it has read everything. The function
// writes nothing to the demo's output: it may run beside the trainer.
func (r *run) startSidecar(ctx context.Context, pod *corev1.Pod, ctr *corev1.Container, g *cgroupv2.Group, saDir string) (func() (*prefetchRun, error), error) {
	// No container runs here, so the paths the webhook wrote for the
	// sidecar's mount namespace (/eddy/data/<volume>, /eddy/sdk) do not
	// exist on this machine: they are mapped to where the volumes are. The
	// status port is moved to a free loopback port (a pod has its own network
	// namespace; this machine's :9471 may be taken), and the service-account
	// folder to the one written for the pod on this machine.
	paths, err := r.hostPaths(pod, ctr)
	if err != nil {
		return nil, err
	}
	ports, err := controlplane.FreePorts(1)
	if err != nil {
		return nil, err
	}
	status := addr(ports[0])
	var args []string
	for _, a := range mapArgs(ctr.Args, paths) {
		if !strings.HasPrefix(a, "--status-addr=") && !strings.HasPrefix(a, "--service-account-dir=") {
			args = append(args, a)
		}
	}
	args = append(args, "--status-addr="+status, "--service-account-dir="+saDir)
	r.say("  running %s as the pod would: eddy %s", ctr.Name, strings.Join(args, " "))
	logPath := filepath.Join(r.o.Dir, "logs", ctr.Name+"-"+pod.Name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(r.o.EddyBin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := g.Start(cmd); err != nil {
		logFile.Close()
		return nil, err
	}
	r.procs = append(r.procs, cmd)
	go func() { _ = cmd.Wait(); logFile.Close() }()
	return func() (*prefetchRun, error) { return r.waitSidecar(ctx, ctr.Name+"-"+pod.Name, status, logPath, start) }, nil
}

// waitSidecar polls a sidecar's status address until it has read
// everything.
func (r *run) waitSidecar(ctx context.Context, name, status, logPath string, start time.Time) (*prefetchRun, error) {
	var st prefetch.Status
	err := r.poll(ctx, 2*time.Minute, "finished prefetch", name, func() (bool, error) {
		resp, err := http.Get("http://" + status + "/status") //nolint:gosec // loopback URL built here
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return false, nil
		}
		if st.Error != "" {
			return false, fmt.Errorf("%s: %s (log in %s)", name, st.Error, logPath)
		}
		return st.Done, nil
	})
	if err != nil {
		return nil, err
	}
	return &prefetchRun{Seconds: time.Since(start).Seconds(), Status: st}, nil
}
