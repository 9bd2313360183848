package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Addresses of a control plane started with Options.RealNode. They are fixed
// so that kubelet, kube-proxy and cluster DNS agree without being told.
const (
	// ServiceCIDR is the range ClusterIPs come from.
	ServiceCIDR = "10.96.0.0/16"
	// KubernetesServiceIP is the ClusterIP of default/kubernetes.
	KubernetesServiceIP = "10.96.0.1"
	// ClusterDNSIP is the ClusterIP reserved for the cluster DNS Service.
	ClusterDNSIP = "10.96.0.10"
	// ClusterDomain is the DNS domain of Services.
	ClusterDomain = "cluster.local"
	// KubeletClientUser is the user the API server presents to kubelets
	// (logs, exec, port-forward); test/node binds it to system:kubelet-api-admin.
	KubeletClientUser = "kube-apiserver-kubelet-client"
)

// RealNodeConfig is what a kubelet and kube-proxy beside the control plane
// need to join it. Env.RealNode returns it when Options.RealNode was set.
type RealNodeConfig struct {
	// NodeIP is the host's address: the API server listens on it (and on
	// loopback) and advertises it as the endpoint of default/kubernetes.
	NodeIP string
	// PKIDir holds the certificates below.
	PKIDir string
	// ServerCAFile is the CA of the API server's serving certificate, whose
	// names include NodeIP, KubernetesServiceIP and kubernetes.default.svc.
	ServerCAFile string
	// KubeletClientCAFile is the CA kubelets trust for client certificates:
	// it signed the certificate the API server presents to them.
	KubeletClientCAFile string
	// ServiceAccountKeyFile is the private key that signs service-account
	// tokens (kube-controller-manager's --service-account-private-key-file).
	ServiceAccountKeyFile string

	serverCA *keyPair
}

// IssueServingCert returns a PEM certificate and key for a server with the
// given names, signed by the cluster's root CA (ServerCAFile), which every
// pod trusts through its service account's ca.crt: what cert-manager with a
// CA issuer holding the cluster CA would issue.
func (c *RealNodeConfig) IssueServingCert(commonName string, dnsNames []string, ips []net.IP) (certPEM, keyPEM []byte, err error) {
	kp, err := c.serverCA.issue(certRequest{commonName: commonName, dnsNames: dnsNames, ips: ips, server: true})
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalECPrivateKey(kp.key)
	if err != nil {
		return nil, nil, err
	}
	return kp.certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// RealNode returns the real-node settings, or nil if Options.RealNode was not set.
func (e *Env) RealNode() *RealNodeConfig { return e.realNode }

// UserKubeconfig returns a kubeconfig that authenticates to the API server
// with a client certificate for name in groups. Kubelets use
// "system:node:<node>" in "system:nodes", kube-proxy "system:kube-proxy".
func (e *Env) UserKubeconfig(name string, groups ...string) ([]byte, error) {
	if e.testEnv == nil {
		return nil, errors.New("control plane is not running")
	}
	u, err := e.testEnv.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, fmt.Errorf("add user %s: %w", name, err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return nil, fmt.Errorf("render kubeconfig for %s: %w", name, err)
	}
	return kc, nil
}

// prepareRealNode writes the certificates a real node needs into
// Dir/pki and configures the API server for it: serving names reachable from
// pods, the node and ServiceAccount admission plugins, Node authorization,
// and a client certificate for talking to kubelets. envtest keeps
// certificates it finds in the API server's cert folder, so pre-populating it
// is how the serving certificate gets the extra names.
func (e *Env) prepareRealNode() error {
	nodeIP, err := HostIP()
	if err != nil {
		return err
	}
	pki := filepath.Join(e.Dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	cfg := &RealNodeConfig{
		NodeIP:                nodeIP,
		PKIDir:                pki,
		ServerCAFile:          filepath.Join(pki, "server-ca.crt"),
		KubeletClientCAFile:   filepath.Join(pki, "kubelet-client-ca.crt"),
		ServiceAccountKeyFile: filepath.Join(pki, "sa-signer.key"),
	}

	serverCA, err := newCA("eddy-server-ca")
	if err != nil {
		return err
	}
	cfg.serverCA = serverCA
	if err := serverCA.write(cfg.ServerCAFile, ""); err != nil {
		return err
	}
	serving, err := serverCA.issue(certRequest{
		commonName: "kube-apiserver",
		dnsNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc." + ClusterDomain},
		ips:    []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(nodeIP), net.ParseIP(KubernetesServiceIP)},
		server: true,
	})
	if err != nil {
		return err
	}
	// envtest's file names: it skips generating its own when apiserver.crt exists.
	if err := serving.write(filepath.Join(pki, "apiserver.crt"), filepath.Join(pki, "apiserver.key")); err != nil {
		return err
	}

	kubeletCA, err := newCA("eddy-kubelet-client-ca")
	if err != nil {
		return err
	}
	if err := kubeletCA.write(cfg.KubeletClientCAFile, ""); err != nil {
		return err
	}
	kubeletClient, err := kubeletCA.issue(certRequest{commonName: KubeletClientUser})
	if err != nil {
		return err
	}
	kubeletClientCrt, kubeletClientKey := filepath.Join(pki, "kubelet-client.crt"), filepath.Join(pki, "kubelet-client.key")
	if err := kubeletClient.write(kubeletClientCrt, kubeletClientKey); err != nil {
		return err
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate service-account signing key: %w", err)
	}
	saKeyDER, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(cfg.ServiceAccountKeyFile, "PRIVATE KEY", saKeyDER); err != nil {
		return err
	}
	saPub := filepath.Join(pki, "sa-signer.pub")
	if err := writePEM(saPub, "PUBLIC KEY", saPubDER); err != nil {
		return err
	}

	// etcd's data in Dir too, so that its command line names Dir and the
	// node's teardown finds it even after a crash of this process.
	e.testEnv.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(e.Dir, "etcd")}
	api := e.testEnv.ControlPlane.GetAPIServer()
	api.CertDir = pki
	api.CA = serverCA.certPEM
	args := api.Configure()
	args.Set("bind-address", "0.0.0.0")
	args.Set("advertise-address", nodeIP)
	args.Set("service-cluster-ip-range", ServiceCIDR)
	// envtest disables ServiceAccount admission; pods on a real node need
	// their token volume, and kubelets are confined to their own node.
	args.Disable("disable-admission-plugins")
	args.Set("enable-admission-plugins", "NodeRestriction")
	args.Set("authorization-mode", "Node,RBAC")
	args.Set("service-account-key-file", saPub)
	args.Set("service-account-signing-key-file", cfg.ServiceAccountKeyFile)
	args.Set("kubelet-client-certificate", kubeletClientCrt)
	args.Set("kubelet-client-key", kubeletClientKey)
	args.Set("kubelet-preferred-address-types", "InternalIP,Hostname")
	e.realNode = cfg
	return nil
}

// controllerManagerServiceAccountArgs are kube-controller-manager's flags
// about service accounts: without a real node the token controller is off
// (kwok pods need no tokens); with one it signs with the API server's key.
func (e *Env) controllerManagerServiceAccountArgs() []string {
	if e.realNode == nil {
		return []string{"--controllers=*,-serviceaccount-token", "--use-service-account-credentials=false"}
	}
	return []string{
		"--controllers=*",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file=" + e.realNode.ServiceAccountKeyFile,
		"--root-ca-file=" + e.realNode.ServerCAFile,
		"--service-cluster-ip-range=" + ServiceCIDR,
	}
}

// HostIP returns the IPv4 address of the interface holding the default
// route, the address a real node registers with.
func HostIP() (string, error) {
	// A UDP "connection" sends nothing; it only asks the kernel for a route.
	if c, err := net.Dial("udp4", "203.0.113.1:9"); err == nil {
		defer c.Close()
		if a, ok := c.LocalAddr().(*net.UDPAddr); ok && !a.IP.IsLoopback() {
			return a.IP.String(), nil
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("list network interfaces: %w", err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || strings.HasPrefix(ifc.Name, "cni") || strings.HasPrefix(ifc.Name, "veth") {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String(), nil
			}
		}
	}
	return "", errors.New("no non-loopback IPv4 address: a real node needs one to register with (check `ip -4 addr`)")
}

type certRequest struct {
	commonName   string
	organization []string
	dnsNames     []string
	ips          []net.IP
	server       bool
}

type keyPair struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newCA(name string) (*keyPair, error) {
	return selfOrSigned(nil, certRequest{commonName: name}, true)
}

func (ca *keyPair) issue(req certRequest) (*keyPair, error) {
	return selfOrSigned(ca, req, false)
}

func selfOrSigned(ca *keyPair, req certRequest, isCA bool) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key for %s: %w", req.commonName, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.commonName, Organization: req.organization},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		DNSNames:     req.dnsNames,
		IPAddresses:  req.ips,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	switch {
	case isCA:
		tmpl.IsCA = true
		tmpl.BasicConstraintsValid = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	case req.server:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	default:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", req.commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// write stores the certificate, and the key when keyPath is not empty.
func (k *keyPair) write(certPath, keyPath string) error {
	if err := os.WriteFile(certPath, k.certPEM, 0o644); err != nil {
		return err
	}
	if keyPath == "" {
		return nil
	}
	der, err := x509.MarshalECPrivateKey(k.key)
	if err != nil {
		return err
	}
	return writePEM(keyPath, "EC PRIVATE KEY", der)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
