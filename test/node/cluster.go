// Package node runs a real Kubernetes node on this machine beside eddy's
// local control plane (package test/controlplane): containerd with runc
// behind a wrapper that clamps what these VMs forbid, a CNI bridge, a
// kubelet and kube-proxy built from the pinned k8s.io/kubernetes module,
// CoreDNS when bin/coredns exists, images built without a registry, and
// datasets as PersistentVolumes (a host folder, or a FUSE mount of a slow
// remote). Everything lives in one folder; Stop tears it all down and checks
// that no process, mount, network device, iptables chain or cgroup is left.
//
// It needs root and the Debian packages hack/install-deps.sh installs.
package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/test/controlplane"
)

// DefaultNodeName is the real node's name.
const DefaultNodeName = "eddy-node"

// Options configure a cluster with a real node. The zero value runs the node
// in a new folder under /tmp with no kwok nodes.
type Options struct {
	// Dir holds everything the cluster writes (kept short: containerd's
	// socket lives in it). Empty means a new folder under /tmp, removed by
	// Stop; a given folder is emptied first and kept.
	Dir string
	// BinDir holds the control-plane binaries, kubelet, kube-proxy and
	// optionally coredns. Empty means bin/ of the eddy checkout.
	BinDir string
	// ImageDir receives the image tarballs. Empty means BinDir/images.
	ImageDir string
	// Images are the short names of images to build and import; empty
	// means all of ImageNames.
	Images []string
	// KwokNodes is the number of kwok fake nodes beside the real one.
	KwokNodes int
	// NodeName is the real node's name; empty means DefaultNodeName.
	NodeName string
	// RemoteDatasets checks, at start, for rclone and fuse3 as well.
	RemoteDatasets bool
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Cluster is a running control plane with a real node.
type Cluster struct {
	// Env is the control plane (API server, etcd, scheduler,
	// controller-manager, kwok).
	Env *controlplane.Env
	// Kubeconfig is an admin kubeconfig.
	Kubeconfig string
	// Dir holds the cluster's state and logs (Dir/logs).
	Dir string
	// NodeName and NodeIP identify the real node.
	NodeName, NodeIP string
	// DNS is true when CoreDNS serves the cluster domain.
	DNS bool
	// Images are the images imported into containerd.
	Images []BuiltImage
	// Timings are the durations of the start-up phases, in order.
	Timings []Timing

	log        io.Writer
	ownDir     bool
	logDir     string
	tools      *hostTools
	state      nodeState
	containerd *containerdInstance
	procs      []*process // started after containerd, stopped in reverse
	datasets   []*Dataset
}

// Timing is how long one start-up phase took.
type Timing struct {
	Phase    string
	Duration time.Duration
}

// nodeState is what teardown needs even when the process that started the
// node is gone; it is kept in Dir/node-state.json.
type nodeState struct {
	NodeName string            `json:"nodeName"`
	Sysctls  map[string]string `json:"sysctls"`
	Veths    []string          `json:"vethsBefore"`
}

const stateFile = "node-state.json"

// Start brings up the control plane and the real node and returns once the
// node is Ready, DNS answers (when CoreDNS is available) and the default
// service account exists. On error everything started is torn down.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	started := time.Now()
	c = &Cluster{Dir: opts.Dir, NodeName: opts.NodeName, log: opts.Log}
	if c.log == nil {
		c.log = io.Discard
	}
	if c.NodeName == "" {
		c.NodeName = DefaultNodeName
	}
	binDir := opts.BinDir
	if binDir == "" {
		root, err := controlplane.RepoRoot()
		if err != nil {
			return nil, fmt.Errorf("find bin/: set Options.BinDir or run inside the eddy checkout: %w", err)
		}
		binDir = filepath.Join(root, "bin")
	}
	if c.tools, err = findTools(binDir, opts.RemoteDatasets); err != nil {
		return nil, err
	}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("/tmp", "eddy-node-"); err != nil {
			return nil, err
		}
		c.ownDir = true
	} else {
		if err := Teardown(context.Background(), c.Dir); err != nil {
			return nil, fmt.Errorf("clear %s from an earlier run: %w", c.Dir, err)
		}
		if err := os.RemoveAll(c.Dir); err != nil {
			return nil, err
		}
	}
	if c.Dir, err = filepath.Abs(c.Dir); err != nil {
		return nil, err
	}
	if err := checkNoOtherNode(); err != nil {
		if c.ownDir {
			os.RemoveAll(c.Dir)
		}
		return nil, err
	}
	c.logDir = filepath.Join(c.Dir, "logs")
	if err := os.MkdirAll(c.logDir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if stopErr := c.Stop(); stopErr != nil {
				err = fmt.Errorf("%w; teardown after the failure: %v", err, stopErr)
			}
		}
	}()
	phase := time.Now()
	mark := func(name string) {
		d := time.Since(phase)
		c.Timings = append(c.Timings, Timing{name, d})
		fmt.Fprintf(c.log, "  %-28s %5.1fs\n", name, d.Seconds())
		phase = time.Now()
	}

	imageDir := opts.ImageDir
	if imageDir == "" {
		imageDir = filepath.Join(binDir, "images")
	}
	c.Images, err = BuildImages(ctx, imageDir, opts.Images...)
	if err != nil {
		// Only the sandbox image is essential; a component that does not
		// compile should not keep the cluster from coming up.
		var ie *ImageError
		if !errors.As(err, &ie) || !c.hasImage(PauseImage) {
			return c, err
		}
		fmt.Fprintf(c.log, "  WARNING: some images were not built; pods using them will not start:\n%v\n", err)
		err = nil
	}
	mark("build images")

	c.Env, err = controlplane.Start(ctx, controlplane.Options{
		Dir: filepath.Join(c.Dir, "controlplane"), BinDir: binDir, Nodes: opts.KwokNodes, RealNode: true,
	})
	if err != nil {
		return c, err
	}
	c.Kubeconfig = c.Env.Kubeconfig
	c.NodeIP = c.Env.RealNode().NodeIP
	mark("control plane")

	c.state = nodeState{NodeName: c.NodeName, Veths: vethNames()}
	c.state.Sysctls, err = saveAndSetSysctls()
	if werr := c.saveState(); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return c, err
	}
	cniConf := filepath.Join(c.Dir, "cni", "net.d")
	if err := writeCNIConfig(cniConf, filepath.Join(c.Dir, "cni", "ipam")); err != nil {
		return c, err
	}
	if c.containerd, err = startContainerd(ctx, c.tools, filepath.Join(c.Dir, "containerd"), c.logDir, cniConf, PauseImage); err != nil {
		return c, err
	}
	tarballs := make([]string, len(c.Images))
	for i, img := range c.Images {
		tarballs[i] = img.Tarball
	}
	if err := c.containerd.importImages(ctx, tarballs); err != nil {
		return c, err
	}
	mark("containerd + images")

	proxy, err := startKubeProxy(ctx, c.Env, c.tools, filepath.Join(c.Dir, "kube-proxy"), c.logDir, c.NodeName)
	if err != nil {
		return c, err
	}
	c.procs = append(c.procs, proxy)
	kubelet, err := startKubelet(ctx, c.Env, c.tools, filepath.Join(c.Dir, "kubelet"), c.logDir, c.NodeName, c.containerd.socket)
	if err != nil {
		return c, err
	}
	c.procs = append(c.procs, kubelet)
	if err := waitNodeReady(ctx, c.Env.Client, c.NodeName, kubelet, 90*time.Second); err != nil {
		return c, err
	}
	mark("kubelet Ready")
	if err := waitKubeProxySynced(ctx, proxy, 60*time.Second); err != nil {
		return c, err
	}
	mark("kube-proxy synced")

	if c.tools.coredns != "" {
		dns, err := startCoreDNS(ctx, c.Env, c.tools.coredns, filepath.Join(c.Dir, "coredns"), c.logDir, c.NodeIP)
		if err != nil {
			return c, err
		}
		c.procs = append(c.procs, dns)
		c.DNS = true
		mark("CoreDNS")
	} else {
		fmt.Fprintf(c.log, "  no %s: cluster DNS is off (make node-binaries builds it)\n", filepath.Join(binDir, "coredns"))
	}
	if err := waitDefaultServiceAccount(ctx, c.Env.Client, 60*time.Second); err != nil {
		return c, err
	}
	mark("service accounts")
	fmt.Fprintf(c.log, "  %-28s %5.1fs\n", "total", time.Since(started).Seconds())
	return c, nil
}

// KubeletRootDir is the kubelet's --root-dir (its pods folder is
// KubeletRootDir/pods): what a DaemonSet that reads the kubelet's volumes
// mounts instead of /var/lib/kubelet.
func (c *Cluster) KubeletRootDir() string { return filepath.Join(c.Dir, "kubelet", "root") }

// Stop tears the node and the control plane down, then checks that nothing
// is left behind: it returns an error naming every leftover. It is safe to
// call more than once.
func (c *Cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var errs []error
	// The kubelet goes first so that it does not restart what is killed next.
	for i := len(c.procs) - 1; i >= 0; i-- {
		if c.procs[i].name == "kubelet" {
			c.procs[i].stop(10 * time.Second)
		}
	}
	if c.containerd != nil {
		c.containerd.killAllTasks(ctx)
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(5 * time.Second)
	}
	c.procs = nil
	for _, d := range c.datasets {
		d.stop()
	}
	c.datasets = nil
	if c.containerd != nil {
		c.containerd.proc.stop(10 * time.Second)
		c.containerd = nil
	}
	if c.Env != nil {
		if err := c.Env.Stop(); err != nil {
			errs = append(errs, err)
		}
		c.Env = nil
	}
	if c.Dir != "" {
		if err := Teardown(ctx, c.Dir); err != nil {
			errs = append(errs, err)
		}
		if c.ownDir {
			if err := os.RemoveAll(c.Dir); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
			}
			c.Dir = ""
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) hasImage(ref string) bool {
	for _, img := range c.Images {
		if img.Ref == ref {
			return true
		}
	}
	return false
}

func (c *Cluster) saveState() error {
	data, err := json.MarshalIndent(c.state, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Dir, stateFile), data, 0o644)
}

// checkNoOtherNode refuses to start beside another real node: they would
// share cni0, port 10250 and the iptables chains.
func checkNoOtherNode() error {
	if _, err := net.InterfaceByName(BridgeName); err == nil {
		hint := "eddy-cluster down --dir DIR"
		if dir := runningNodeDir(); dir != "" {
			hint = "eddy-cluster down --dir " + dir
		}
		return fmt.Errorf("network device %s exists: another real node is running or was not torn down (make cluster-down, or %s)", BridgeName, hint)
	}
	if l, err := net.Listen("tcp", ":10250"); err != nil {
		return fmt.Errorf("port 10250 is taken, so another kubelet is running (make cluster-down): %w", err)
	} else {
		l.Close()
	}
	return nil
}

// runningNodeDir returns the folder of a running node, found from the
// command line of its containerd (--config DIR/containerd/config.toml) or of
// a shim that outlived it (-address DIR/containerd/containerd.sock), or "".
func runningNodeDir() string {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil || !strings.HasPrefix(strings.TrimSpace(string(comm)), "containerd") {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		for _, a := range strings.Split(string(cmd), "\x00") {
			for _, suffix := range []string{"/containerd/config.toml", "/containerd/containerd.sock"} {
				if strings.HasPrefix(a, "/") && strings.HasSuffix(a, suffix) {
					return strings.TrimSuffix(a, suffix)
				}
			}
		}
	}
	return ""
}

// waitDefaultServiceAccount waits for the controller-manager to create the
// default service account and the root CA config map, without which pods
// cannot be created (ServiceAccount admission) or started (token volume).
func waitDefaultServiceAccount(ctx context.Context, c client.Client, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var sa corev1.ServiceAccount
		var cm corev1.ConfigMap
		errSA := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "default"}, &sa)
		errCM := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "kube-root-ca.crt"}, &cm)
		if errSA == nil && errCM == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no default service account or kube-root-ca.crt in namespace default after %s (controller-manager log in the control plane folder): %v, %v", timeout, errSA, errCM)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// vethNames lists the veth devices present now.
func vethNames() []string {
	ifaces, _ := net.Interfaces()
	var names []string
	for _, i := range ifaces {
		if strings.HasPrefix(i.Name, "veth") {
			names = append(names, i.Name)
		}
	}
	return names
}
