// Package controlplane starts a real local Kubernetes control plane for eddy's
// tests and demo: kube-apiserver and etcd (through controller-runtime's
// envtest) with eddy's CRDs installed, and optionally kube-scheduler,
// kube-controller-manager and kwok with fake nodes on which workloads get
// Running pods. The binaries come from the repository's bin/ folder, built
// by `make tools`.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/config"
)

// Options configure a control plane. The zero value starts an API server and
// etcd with eddy's CRDs and nothing else.
type Options struct {
	// BinDir holds kube-apiserver, etcd and kubectl (and kube-scheduler,
	// kube-controller-manager, kwok when Nodes > 0). Empty means $EDDY_BIN_DIR,
	// else $KUBEBUILDER_ASSETS, else bin/ at the root of the eddy checkout
	// containing the working directory.
	BinDir string
	// Dir receives the kubeconfig and component logs. Empty means a new
	// temporary folder, removed on Stop.
	Dir string
	// Nodes is the number of kwok fake nodes; above zero also starts
	// kube-scheduler, kube-controller-manager and kwok.
	Nodes int
	// APIServerFlags are extra kube-apiserver flags, name → value.
	APIServerFlags map[string]string
	// RealNode prepares the control plane for a kubelet on this machine
	// (package test/node starts it): an API server reachable from pods with
	// ServiceAccount and NodeRestriction admission and Node authorization,
	// and kube-scheduler and kube-controller-manager (with its service-account
	// token controller) even when Nodes is 0. See RealNodeConfig.
	RealNode bool
	// ControllerQPS is the API request rate of kube-scheduler and
	// kube-controller-manager (their burst is twice it). Zero means
	// DefaultControllerQPS: their own default, 20, caps a cluster at about
	// 17 new pods/s, too slow for scale tests.
	ControllerQPS int
}

// DefaultControllerQPS is Options.ControllerQPS when zero.
const DefaultControllerQPS = 200

// Env is a running control plane.
type Env struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Client is a controller-runtime client for Config with eddy's types registered.
	Client client.Client
	// Scheme has client-go's and eddy's types.
	Scheme *runtime.Scheme
	// Kubeconfig is the path of a kubeconfig file for kubectl.
	Kubeconfig string
	// Dir holds Kubeconfig and the component logs.
	Dir string

	testEnv   *envtest.Environment
	procs     []*exec.Cmd
	ownDir    bool
	nodeNames []string
	realNode  *RealNodeConfig
}

// NodeNames are the kwok fake nodes created.
func (e *Env) NodeNames() []string { return e.nodeNames }

// Scheme returns a scheme with client-go's built-in types and eddy's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = apiextensionsv1.AddToScheme(s)
	_ = eddyv1alpha1.AddToScheme(s)
	return s
}

// Start brings the control plane up and returns once the API server serves
// eddy's CRDs and, with Nodes > 0, every fake node is Ready. On error nothing
// is left running.
func Start(ctx context.Context, opts Options) (env *Env, err error) {
	binDir, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	need := []string{"kube-apiserver", "etcd", "kubectl"}
	if opts.Nodes > 0 || opts.RealNode {
		need = append(need, "kube-scheduler", "kube-controller-manager", "kwok")
	}
	if err := checkBinaries(binDir, need); err != nil {
		return nil, err
	}
	crds, err := config.CRDs()
	if err != nil {
		return nil, fmt.Errorf("load eddy CRDs: %w", err)
	}

	env = &Env{Dir: opts.Dir, Scheme: Scheme()}
	// started, not env: "return nil, err" sets env to nil before the
	// deferred clean-up below runs.
	started := env
	if env.Dir == "" {
		if env.Dir, err = os.MkdirTemp("", "eddy-controlplane-"); err != nil {
			return nil, err
		}
		env.ownDir = true
	} else if err := os.MkdirAll(env.Dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = started.Stop()
		}
	}()

	env.testEnv = &envtest.Environment{
		BinaryAssetsDirectory:    binDir,
		CRDInstallOptions:        envtest.CRDInstallOptions{CRDs: crds, Scheme: env.Scheme},
		Scheme:                   env.Scheme,
		ControlPlaneStartTimeout: 90 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	if opts.RealNode {
		if err := env.prepareRealNode(); err != nil {
			return nil, fmt.Errorf("prepare the API server for a real node: %w", err)
		}
	}
	args := env.testEnv.ControlPlane.GetAPIServer().Configure()
	// The scheduler and controller-manager authenticate with the admin
	// kubeconfig; service-account tokens for pods are signed with envtest's key.
	for k, v := range opts.APIServerFlags {
		args.Set(k, v)
	}
	if env.Config, err = env.testEnv.Start(); err != nil {
		return nil, fmt.Errorf("start kube-apiserver and etcd from %s: %w", binDir, err)
	}
	if env.Client, err = client.New(env.Config, client.Options{Scheme: env.Scheme}); err != nil {
		return nil, fmt.Errorf("client for %s: %w", env.Config.Host, err)
	}
	admin, err := env.testEnv.AddUser(envtest.User{Name: "eddy-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("add admin user: %w", err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return nil, fmt.Errorf("render kubeconfig: %w", err)
	}
	env.Kubeconfig = filepath.Join(env.Dir, "kubeconfig")
	if err := os.WriteFile(env.Kubeconfig, kc, 0o600); err != nil {
		return nil, err
	}

	if opts.Nodes > 0 || opts.RealNode {
		if err := env.startNodes(ctx, binDir, opts.Nodes, opts.ControllerQPS); err != nil {
			return nil, err
		}
	}
	return env, nil
}

// Stop stops every component started and removes the temporary folder.
// It is safe to call more than once.
func (e *Env) Stop() error {
	var errs []error
	for i := len(e.procs) - 1; i >= 0; i-- {
		stopProcess(e.procs[i])
	}
	e.procs = nil
	if e.testEnv != nil {
		if err := e.testEnv.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop kube-apiserver and etcd: %w", err))
		}
		e.testEnv = nil
	}
	if e.ownDir && e.Dir != "" {
		_ = os.RemoveAll(e.Dir)
		e.Dir = ""
	}
	return errors.Join(errs...)
}

// Kubectl runs kubectl against the control plane and returns its combined output.
func (e *Env) Kubectl(ctx context.Context, args ...string) (string, error) {
	bin, err := exec.LookPath(filepath.Join(filepath.Dir(e.testEnv.ControlPlane.APIServer.Path), "kubectl"))
	if err != nil {
		bin = "kubectl"
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// WaitForNodesReady waits until every kwok node reports Ready.
func (e *Env) waitNodesReady(ctx context.Context, want int) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		var nodes corev1.NodeList
		if err := e.Client.List(ctx, &nodes); err == nil {
			ready := 0
			for _, n := range nodes.Items {
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						ready++
					}
				}
			}
			if ready >= want {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kwok nodes not Ready after 60s (logs in %s): %w", e.Dir, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
