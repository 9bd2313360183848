package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/eddy-autotune/eddy/test/controlplane"
)

// Pod network of the real node.
const (
	// PodCIDR is the range pod IPs on the real node come from.
	PodCIDR = "10.244.0.0/24"
	// BridgeName is the Linux bridge the CNI plugin creates; teardown deletes it.
	BridgeName = "cni0"
	// cniNetworkName names the CNI network (and prefixes its cache entries).
	cniNetworkName = "eddy"
)

// writeCNIConfig writes the bridge conflist containerd's CRI plugin reads.
// IPAM state stays inside the node's folder.
func writeCNIConfig(confDir, ipamDir string) error {
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return err
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       cniNetworkName,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      BridgeName,
				"isGateway":   true,
				"ipMasq":      true,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": ipamDir,
					"ranges":  [][]map[string]string{{{"subnet": PodCIDR}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(confDir, "10-eddy.conflist"), data, 0o644)
}

// sysctls the node needs, and those kubelet sets on its own; their previous
// values are saved at start and restored by teardown.
var (
	nodeSysctls = map[string]string{
		"net/ipv4/ip_forward":                 "1",
		"net/bridge/bridge-nf-call-iptables":  "1",
		"net/bridge/bridge-nf-call-ip6tables": "1",
	}
	kubeletSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
		"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}
)

// saveAndSetSysctls records the current value of every sysctl the node
// touches and sets those it needs.
func saveAndSetSysctls() (map[string]string, error) {
	saved := map[string]string{}
	names := append([]string{}, kubeletSysctls...)
	for k := range nodeSysctls {
		names = append(names, k)
	}
	for _, k := range names {
		b, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			continue
		}
		saved[k] = strings.TrimSpace(string(b))
	}
	for k, v := range nodeSysctls {
		if _, ok := saved[k]; !ok {
			if k == "net/ipv4/ip_forward" {
				return saved, fmt.Errorf("sysctl %s is missing: the node cannot route pod traffic", k)
			}
			continue
		}
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			return saved, fmt.Errorf("set sysctl %s=%s: %w", k, v, err)
		}
	}
	return saved, nil
}

func restoreSysctls(saved map[string]string) {
	for k, v := range saved {
		_ = os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644)
	}
}

// kubeProxyHealthz is where kube-proxy serves /healthz.
const kubeProxyHealthz = "127.0.0.1:10256"

// startKubeProxy runs kube-proxy in iptables mode for the node, authenticated
// as system:kube-proxy (bound to system:node-proxier by default RBAC). It
// leaves the conntrack and localnet sysctls alone so teardown has nothing
// to restore.
func startKubeProxy(ctx context.Context, env *controlplane.Env, tools *hostTools, dir, logDir, nodeName string) (*process, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	kc, err := env.UserKubeconfig("system:kube-proxy")
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return nil, err
	}
	config := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
clusterCIDR: %s
bindAddress: 0.0.0.0
nodePortAddresses: [primary]
healthzBindAddress: %s
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
  syncPeriod: 5s
  minSyncPeriod: 200ms
`, kubeconfig, nodeName, PodCIDR, kubeProxyHealthz)
	configPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		return nil, err
	}
	return startProcess(ctx, logDir, "kube-proxy", tools.kubeProxy, []string{"--config", configPath, "--v=2"})
}

// waitKubeProxySynced waits until kube-proxy's /healthz answers 200, which
// it does once it has programmed the node's Service rules for the first
// time: a Service created before that has no rule, and on a host whose
// outbound traffic goes through a proxy, that proxy answers for the
// ClusterIP (CI once saw 404s with an empty body for a minute).
func waitKubeProxySynced(ctx context.Context, proxy *process, timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := hc.Get("http://" + kubeProxyHealthz + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if !proxy.alive() {
			return fmt.Errorf("kube-proxy exited; %s ends:\n%s", proxy.log, logTail(proxy.log, 4000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-proxy not synced after %s (/healthz: %v); %s ends:\n%s", timeout, err, proxy.log, logTail(proxy.log, 4000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
