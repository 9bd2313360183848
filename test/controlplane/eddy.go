package controlplane

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/eddy-autotune/eddy/config"
)

// EddyNamespace is where config/ installs eddy's components.
const EddyNamespace = "eddy-system"

// InstallIdentities creates eddy's service accounts, RBAC and admission
// policies (and the webhook's certificate Secret, which its Role names) as
// config/ installs them, and writes into Dir, for each of components
// ("analyzer", "webhook", ...), a kubeconfig that acts as its service account
// eddy-system/eddy-<component> by impersonation: components run as processes
// here get exactly the rights they have in a cluster. It returns component →
// kubeconfig path.
func (e *Env) InstallIdentities(ctx context.Context, components ...string) (map[string]string, error) {
	objs, err := config.Deployment()
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
			"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "Secret":
		default:
			continue
		}
		if err := e.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	admin, err := clientcmd.LoadFromFile(e.Kubeconfig)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, comp := range components {
		kc := admin.DeepCopy()
		user := kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo]
		user.Impersonate = "system:serviceaccount:" + EddyNamespace + ":eddy-" + comp
		path := filepath.Join(e.Dir, "kubeconfig-"+comp)
		if err := clientcmd.WriteToFile(*kc, path); err != nil {
			return nil, fmt.Errorf("kubeconfig of the %s: %w", comp, err)
		}
		out[comp] = path
	}
	return out, nil
}

// InstallWebhooks registers config/'s admission policies and its webhook
// configurations, pointed at a webhook process serving HTTPS on addr
// (loopback) instead of at a Service.
func (e *Env) InstallWebhooks(ctx context.Context, addr string) error {
	objs, err := config.WebhookConfigurations()
	if err != nil {
		return err
	}
	policies, err := config.AdmissionPolicies()
	if err != nil {
		return err
	}
	for _, p := range policies {
		// InstallIdentities creates them too.
		if err := e.Client.Create(ctx, p); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s %s: %w", p.GetKind(), p.GetName(), err)
		}
	}
	for _, o := range objs {
		hooks, _ := o.Object["webhooks"].([]any)
		for _, raw := range hooks {
			h, ok := raw.(map[string]any)
			if !ok {
				continue
			}
			cc, _ := h["clientConfig"].(map[string]any)
			svc, _ := cc["service"].(map[string]any)
			path, _ := svc["path"].(string)
			if cc == nil || path == "" {
				return fmt.Errorf("%s %s: a webhook without clientConfig.service.path", o.GetKind(), o.GetName())
			}
			cc["url"] = "https://" + addr + path
			delete(cc, "service")
		}
		if err := e.Client.Create(ctx, o); err != nil {
			return fmt.Errorf("create %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

// FreePorts returns n loopback TCP ports free now, for components started
// as processes.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
