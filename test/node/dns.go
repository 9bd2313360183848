package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/test/controlplane"
)

// dnsPort is where CoreDNS listens on the node's address; the kube-dns
// Service (ClusterIP controlplane.ClusterDNSIP, port 53) routes to it.
const dnsPort = 1053

// coreDNSUser is the identity CoreDNS reads Services and EndpointSlices as.
const coreDNSUser = "eddy:coredns"

// startCoreDNS runs CoreDNS on the host for the cluster domain, with its
// own user and RBAC, and puts the kube-dns Service in front of it. It
// returns once a query for kubernetes.default.svc answers.
func startCoreDNS(ctx context.Context, env *controlplane.Env, bin, dir, logDir, nodeIP string) (*process, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := grantCoreDNS(ctx, env.Client); err != nil {
		return nil, err
	}
	kc, err := env.UserKubeconfig(coreDNSUser)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return nil, err
	}
	corefile := fmt.Sprintf(`.:%d {
    bind %s
    errors
    kubernetes %s in-addr.arpa ip6.arpa {
        kubeconfig %s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
}
`, dnsPort, nodeIP, controlplane.ClusterDomain, kubeconfig)
	path := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(path, []byte(corefile), 0o644); err != nil {
		return nil, err
	}
	p, err := startProcess(ctx, logDir, "coredns", bin, []string{"-conf", path})
	if err != nil {
		return nil, err
	}
	if err := createDNSService(ctx, env.Client, nodeIP); err != nil {
		p.stop(time.Second)
		return nil, err
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", net.JoinHostPort(nodeIP, strconv.Itoa(dnsPort)))
	}}
	name := "kubernetes.default.svc." + controlplane.ClusterDomain
	deadline := time.Now().Add(30 * time.Second)
	for {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		addrs, err := r.LookupHost(qctx, name)
		cancel()
		if err == nil && len(addrs) > 0 && addrs[0] == controlplane.KubernetesServiceIP {
			return p, nil
		}
		if !p.alive() || time.Now().After(deadline) {
			p.stop(time.Second)
			return nil, fmt.Errorf("CoreDNS does not resolve %s to %s (got %v, %v); %s ends:\n%s", name, controlplane.KubernetesServiceIP, addrs, err, p.log, logTail(p.log, 2000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func grantCoreDNS(ctx context.Context, c client.Client) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: coreDNSUser},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: coreDNSUser},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: coreDNSUser},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: coreDNSUser}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("RBAC for CoreDNS: %w", err)
		}
	}
	return nil
}

// createDNSService creates kube-system/kube-dns without a selector and an
// EndpointSlice pointing at CoreDNS on the node.
func createDNSService(ctx context.Context, c client.Client, nodeIP string) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: corev1.ServiceSpec{
			ClusterIP: controlplane.ClusterDNSIP,
			Ports: []corev1.ServicePort{
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(dnsPort)},
				{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(dnsPort)},
			},
		},
	}
	if err := c.Create(ctx, svc); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create Service kube-system/kube-dns: %w", err)
	}
	udp, tcp, port := corev1.ProtocolUDP, corev1.ProtocolTCP, int32(dnsPort)
	names := []string{"dns", "dns-tcp"}
	ready := true
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns-node", Labels: map[string]string{
			discoveryv1.LabelServiceName: "kube-dns",
			discoveryv1.LabelManagedBy:   "eddy-test-node",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{nodeIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports: []discoveryv1.EndpointPort{
			{Name: &names[0], Protocol: &udp, Port: &port},
			{Name: &names[1], Protocol: &tcp, Port: &port},
		},
	}
	if err := c.Create(ctx, slice); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create EndpointSlice kube-system/kube-dns-node: %w", err)
	}
	return nil
}
