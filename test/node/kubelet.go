package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/test/controlplane"
)

// NodeLabel marks the real node, so that tests can select it
// (nodeSelector eddy.io/node: real) over the kwok nodes.
const NodeLabel = "eddy.io/node"

// KubeletCgroupRoot is the kubelet's --cgroup-root, in every hierarchy: its
// pods live under /eddy-node/kubepods. A root of its own keeps the kubelet
// away from the kubepods cgroups other tests and `eddy demo` create to stand
// in for pods (the kubelet kills and removes pod cgroups it does not know),
// so they can run beside a real node.
const KubeletCgroupRoot = "eddy-node"

// createKubeletCgroupRoot creates KubeletCgroupRoot in every mounted
// hierarchy (the kubelet refuses a cgroup root that does not exist), with
// the root's CPUs and memory nodes in the v1 cpuset hierarchy, which a new
// cpuset cgroup does not inherit.
func createKubeletCgroupRoot() error {
	for _, root := range cgroupRoots() {
		dir := filepath.Join(root, KubeletCgroupRoot)
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("create the kubelet's cgroup root: %w", err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			parent, err := os.ReadFile(filepath.Join(root, f))
			if err != nil {
				continue // not the v1 cpuset hierarchy
			}
			if own, _ := os.ReadFile(filepath.Join(dir, f)); strings.TrimSpace(string(own)) != "" {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, f), parent, 0o644); err != nil {
				return fmt.Errorf("set %s of %s: %w", f, dir, err)
			}
		}
	}
	return nil
}

// kubeletConfig is the kubelet's configuration. Authentication: client
// certificates from the API server's kubelet-client CA and bearer tokens
// through TokenReview (webhook); authorization: SubjectAccessReview
// (webhook). Anonymous access is off. makeIPTablesUtilChains is off so the
// only iptables chains are kube-proxy's and the CNI plugins'.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: /%[8]s
failSwapOn: false
containerRuntimeEndpoint: unix://%[1]s
address: %[2]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
    cacheTTL: 10s
  x509:
    clientCAFile: %[3]s
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 10s
    cacheUnauthorizedTTL: 5s
clusterDNS:
- %[4]s
clusterDomain: %[5]s
resolvConf: %[6]s
podLogsDir: %[7]s
makeIPTablesUtilChains: false
serializeImagePulls: false
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
evictionPressureTransitionPeriod: 10s
shutdownGracePeriod: 0s
protectKernelDefaults: false
`

// startKubelet writes the kubelet's configuration and client certificate
// (system:node:<nodeName> in system:nodes, confined by the Node authorizer
// and NodeRestriction) and starts it.
func startKubelet(ctx context.Context, env *controlplane.Env, tools *hostTools, dir, logDir, nodeName, criSocket string) (*process, error) {
	rn := env.RealNode()
	for _, d := range []string{dir, filepath.Join(dir, "root"), filepath.Join(dir, "pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	kc, err := env.UserKubeconfig("system:node:"+nodeName, "system:nodes")
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return nil, err
	}
	// Pods with dnsPolicy Default get no resolver: there is no network.
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("options ndots:1\n"), 0o644); err != nil {
		return nil, err
	}
	config := filepath.Join(dir, "config.yaml")
	body := fmt.Sprintf(kubeletConfig, criSocket, rn.NodeIP, rn.KubeletClientCAFile, controlplane.ClusterDNSIP,
		controlplane.ClusterDomain, resolv, filepath.Join(dir, "pod-logs"), KubeletCgroupRoot)
	if err := os.WriteFile(config, []byte(body), 0o644); err != nil {
		return nil, err
	}
	if err := grantKubeletAPI(ctx, env.Client); err != nil {
		return nil, err
	}
	if err := createKubeletCgroupRoot(); err != nil {
		return nil, err
	}
	return startProcess(ctx, logDir, "kubelet", tools.kubelet, []string{
		"--config=" + config,
		"--kubeconfig=" + kubeconfig,
		"--root-dir=" + filepath.Join(dir, "root"),
		"--cert-dir=" + filepath.Join(dir, "pki"),
		"--hostname-override=" + nodeName,
		"--node-ip=" + rn.NodeIP,
		"--node-labels=" + NodeLabel + "=real",
		"--v=2",
	})
}

// grantKubeletAPI lets the API server's kubelet client (logs, exec,
// port-forward) through the kubelet's webhook authorizer.
func grantKubeletAPI(ctx context.Context, c client.Client) error {
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "eddy:kube-apiserver-kubelet-client"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: controlplane.KubeletClientUser}},
	}
	if err := c.Create(ctx, crb); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("bind %s to system:kubelet-api-admin: %w", controlplane.KubeletClientUser, err)
	}
	return nil
}

// waitNodeReady waits until the node reports Ready, or the kubelet exits.
func waitNodeReady(ctx context.Context, c client.Client, name string, kubelet *process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var n corev1.Node
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &n); err == nil {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		if !kubelet.alive() {
			return fmt.Errorf("kubelet exited before node %s was Ready; %s ends:\n%s", name, kubelet.log, logTail(kubelet.log, 4000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not Ready after %s; kubelet log %s ends:\n%s", name, timeout, kubelet.log, logTail(kubelet.log, 4000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
