package controlplane

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KwokNodeAnnotation marks nodes that kwok manages.
const KwokNodeAnnotation = "kwok.x-k8s.io/node"

// startNodes starts kube-controller-manager, kube-scheduler and kwok, then
// creates n fake nodes and waits for them to be Ready.
func (e *Env) startNodes(ctx context.Context, binDir string, n, qps int) error {
	kc := e.Kubeconfig
	if qps <= 0 {
		qps = DefaultControllerQPS
	}
	rate := []string{fmt.Sprintf("--kube-api-qps=%d", qps), fmt.Sprintf("--kube-api-burst=%d", 2*qps)}
	components := []struct {
		name string
		args []string
	}{
		{"kube-controller-manager", append([]string{
			"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
			"--leader-elect=false",
			"--bind-address=127.0.0.1", "--secure-port=0",
			"--concurrent-statefulset-syncs=5",
		}, append(rate, e.controllerManagerServiceAccountArgs()...)...)},
		{"kube-scheduler", append([]string{
			"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
			"--leader-elect=false",
			"--bind-address=127.0.0.1", "--secure-port=0",
		}, rate...)},
		{"kwok", []string{
			"--kubeconfig=" + kc,
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=" + KwokNodeAnnotation + "=fake",
			"--node-lease-duration-seconds=40",
			"--cidr=10.0.0.1/24",
			"--node-ip=10.0.0.1",
		}},
	}
	for _, c := range components {
		if _, err := e.StartProcess(ctx, filepath.Join(binDir, c.name), c.name, c.args...); err != nil {
			return err
		}
	}
	for i := 0; i < n; i++ {
		node := fakeNode(fmt.Sprintf("kwok-node-%d", i))
		if err := e.Client.Create(ctx, node); err != nil {
			return fmt.Errorf("create fake node %s: %w", node.Name, err)
		}
		e.nodeNames = append(e.nodeNames, node.Name)
	}
	return e.waitNodesReady(ctx, n)
}

func fakeNode(name string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{KwokNodeAnnotation: "fake"},
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
			},
		},
		Spec: corev1.NodeSpec{
			Taints: []corev1.Taint{},
		},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("32"),
				corev1.ResourceMemory: resource.MustParse("256Gi"),
				corev1.ResourcePods:   resource.MustParse("110"),
			},
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("32"),
				corev1.ResourceMemory: resource.MustParse("256Gi"),
				corev1.ResourcePods:   resource.MustParse("110"),
			},
		},
	}
}

// StartProcess runs a component in the background with its output in
// Dir/<name>.log, makes sure it is still alive shortly after and returns its
// process id. Stop ends it (SIGTERM to its process group, then SIGKILL).
func (e *Env) StartProcess(ctx context.Context, path, name string, args ...string) (int, error) {
	logPath := filepath.Join(e.Dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Own process group, so Stop can end the component and anything it forked.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	e.procs = append(e.procs, cmd)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logFile.Close() }()
	select {
	case err := <-exited:
		out, _ := os.ReadFile(logPath)
		return 0, fmt.Errorf("%s exited at start (%v); its log %s ends:\n%s", name, err, logPath, tail(out, 2000))
	case <-time.After(500 * time.Millisecond):
		return cmd.Process.Pid, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(cmd.Process.Pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
