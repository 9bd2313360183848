package demo

import (
	"context"
	"fmt"
	"path/filepath"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/eddy-autotune/eddy/config"
)

// components are eddy's processes, each running as its service account
// eddy-system/eddy-<component>.
var components = []string{"analyzer", "collector", "webhook", "operator"}

// installIdentities creates eddy's service accounts, RBAC and admission
// policies (and the webhook's certificate Secret, which its Role names) as
// config/ installs them, and writes for each component a
// kubeconfig that acts as its service account (impersonation): the
// components run here with exactly the rights they have in a cluster.
func (r *run) installIdentities(ctx context.Context) (map[string]string, error) {
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
		if err := r.env.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	admin, err := clientcmd.LoadFromFile(r.env.Kubeconfig)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, comp := range components {
		kc := admin.DeepCopy()
		user := kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo]
		user.Impersonate = "system:serviceaccount:" + System + ":eddy-" + comp
		path := filepath.Join(r.o.Dir, "controlplane", "kubeconfig-"+comp)
		if err := clientcmd.WriteToFile(*kc, path); err != nil {
			return nil, fmt.Errorf("kubeconfig of the %s: %w", comp, err)
		}
		out[comp] = path
	}
	return out, nil
}
