package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/config"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

// Names of what config/ installs, as DeployEddy finds them.
const (
	EddySystem        = "eddy-system"
	AnalyzerName      = "eddy-analyzer"
	CollectorName     = "eddy-collector"
	WebhookName       = "eddy-webhook"
	OperatorName      = "eddy-operator"
	AnalyzerTLSSecret = "eddy-analyzer-tls"
	// releaseImage is the image config/ names; DeployEddy runs EddyImage
	// instead.
	releaseImage = "ghcr.io/eddy-autotune/eddy:latest"
	// analyzerHost is the analyzer's Service name config/ addresses it by.
	analyzerHost = "eddy-analyzer.eddy-system.svc"
)

// EddyOptions adjust eddy's manifests for a test.
type EddyOptions struct {
	// Args are appended to each component's arguments, by component
	// (analyzer, collector, webhook, operator); later flags win.
	Args map[string][]string
}

// Eddy is eddy deployed on the cluster from config/, as pods.
type Eddy struct {
	// AnalyzerIP is the analyzer Service's ClusterIP.
	AnalyzerIP string
	// AnalyzerURL is the base URL injected prefetchers fetch manifests from.
	AnalyzerURL string
}

// DeployEddy installs eddy's components exactly as `kubectl apply -k config`
// would (config.Deployment), with five changes a cluster without a registry,
// a DNS server or a storage provisioner needs: the image is EddyImage (never
// pulled); each claim (the analyzer's state) is bound to a folder of the
// cluster's on the real node, which outlives the pods (provideVolume); the
// collector mounts this node's kubelet folder and keeps its state in the
// cluster folder; every pod runs on the real node (kwok nodes run nothing
// and have no kernel to record); without CoreDNS the analyzer is addressed by its ClusterIP;
// and the analyzer's TLS Secret is issued by the cluster's root CA, which
// pods trust. It returns once every component is available and the webhook
// has published its CA.
func (c *Cluster) DeployEddy(ctx context.Context, opts EddyOptions) (*Eddy, error) {
	objs, err := config.Deployment()
	if err != nil {
		return nil, err
	}
	if !c.hasImage(EddyImage) {
		return nil, fmt.Errorf("image %s was not imported: start the cluster with the eddy image", EddyImage)
	}
	cl := c.Env.Client
	// Everything but the pods first, so the analyzer Service has its
	// ClusterIP before the certificate and the arguments that name it.
	var workloads []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Deployment" || o.GetKind() == "DaemonSet" {
			workloads = append(workloads, o)
			continue
		}
		if o.GetKind() == "PersistentVolumeClaim" {
			if err := c.provideVolume(ctx, o, objs); err != nil {
				return nil, err
			}
		}
		if err := cl.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	var svc corev1.Service
	if err := cl.Get(ctx, client.ObjectKey{Namespace: EddySystem, Name: AnalyzerName}, &svc); err != nil {
		return nil, fmt.Errorf("the analyzer's Service: %w", err)
	}
	e := &Eddy{AnalyzerIP: svc.Spec.ClusterIP}
	host := analyzerHost
	if !c.DNS {
		host = e.AnalyzerIP
	}
	e.AnalyzerURL = "https://" + host
	if err := c.analyzerTLS(ctx, e.AnalyzerIP); err != nil {
		return nil, err
	}

	stateDir := filepath.Join(c.Dir, "eddy-collector")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	for _, u := range workloads {
		var obj client.Object
		var spec *corev1.PodTemplateSpec
		switch u.GetKind() {
		case "Deployment":
			d := &appsv1.Deployment{}
			obj, spec = d, &d.Spec.Template
			err = runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, d)
		case "DaemonSet":
			d := &appsv1.DaemonSet{}
			obj, spec = d, &d.Spec.Template
			err = runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, d)
		}
		if err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		if err := c.adjust(obj.GetName(), &spec.Spec, host, stateDir, opts); err != nil {
			return nil, err
		}
		if err := cl.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create %s %s: %w", u.GetKind(), obj.GetName(), err)
		}
	}
	if err := c.waitEddy(ctx, 3*time.Minute); err != nil {
		return nil, err
	}
	return e, nil
}

// provideVolume does a provisioner's work for one of eddy's claims: a
// hostPath PersistentVolume on the real node, in a folder of the cluster's
// owned by the user eddy's pods run as (hostPath volumes ignore fsGroup),
// and the claim pre-bound to it. The folder is kept across DeployEddy calls
// of one cluster, as a provisioned volume outlives the pods using it.
func (c *Cluster) provideVolume(ctx context.Context, claim *unstructured.Unstructured, objs []*unstructured.Unstructured) error {
	var pvc corev1.PersistentVolumeClaim
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(claim.Object, &pvc); err != nil {
		return fmt.Errorf("decode PersistentVolumeClaim %s: %w", claim.GetName(), err)
	}
	uid, gid, err := claimUser(objs, pvc.Name)
	if err != nil {
		return err
	}
	dir := filepath.Join(c.Dir, "volumes", pvc.Namespace+"-"+pvc.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		return err
	}
	name := "eddy-" + pvc.Namespace + "-" + pvc.Name
	dirType := corev1.HostPathDirectory
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      pvc.Spec.Resources.Requests,
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &dirType}},
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: pvc.Namespace, Name: pvc.Name},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{c.NodeName}}},
			}}}},
		},
	}
	if err := c.Env.Client.Create(ctx, pv); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create PersistentVolume %s: %w", name, err)
	}
	return unstructured.SetNestedField(claim.Object, name, "spec", "volumeName")
}

// claimUser is the user and group of the pod template that mounts the claim
// (its runAsUser, and fsGroup for the group).
func claimUser(objs []*unstructured.Unstructured, claim string) (uid, gid int64, err error) {
	for _, u := range objs {
		if u.GetKind() != "Deployment" {
			continue
		}
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &d); err != nil {
			return 0, 0, fmt.Errorf("decode Deployment %s: %w", u.GetName(), err)
		}
		spec := d.Spec.Template.Spec
		for _, v := range spec.Volumes {
			if v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != claim {
				continue
			}
			sc := spec.SecurityContext
			if sc == nil || sc.RunAsUser == nil || sc.FSGroup == nil {
				return 0, 0, fmt.Errorf("claim %s: Deployment %s mounts it without runAsUser and fsGroup: whom should its folder belong to?", claim, d.Name)
			}
			return *sc.RunAsUser, *sc.FSGroup, nil
		}
	}
	return 0, 0, fmt.Errorf("no Deployment mounts claim %s", claim)
}

// adjust rewrites one component's pod spec for this cluster.
func (c *Cluster) adjust(name string, spec *corev1.PodSpec, analyzerHostOrIP, stateDir string, opts EddyOptions) error {
	component := strings.TrimPrefix(name, "eddy-")
	for i := range spec.Containers {
		ctr := &spec.Containers[i]
		if ctr.Image != releaseImage {
			return fmt.Errorf("%s: container %s runs %s, not %s: DeployEddy does not know this manifest", name, ctr.Name, ctr.Image, releaseImage)
		}
		ctr.Image, ctr.ImagePullPolicy = EddyImage, corev1.PullNever
		for j, a := range ctr.Args {
			a = strings.ReplaceAll(a, releaseImage, EddyImage)
			ctr.Args[j] = strings.ReplaceAll(a, analyzerHost, analyzerHostOrIP)
		}
		if i == 0 {
			ctr.Args = append(ctr.Args, opts.Args[component]...)
		}
		if component == "webhook" {
			// The injected containers run the image this cluster has.
			ctr.Args = append(ctr.Args, "--image-pull-policy=Never")
		}
	}
	// Only the real node runs containers (and has a kernel to record): kwok
	// nodes would take the pods and run nothing.
	spec.NodeSelector = map[string]string{NodeLabel: "real"}
	if component != "collector" {
		return nil
	}
	kubeletRoot := c.KubeletRootDir()
	for i := range spec.Volumes {
		hp := spec.Volumes[i].HostPath
		switch {
		case hp == nil:
		case hp.Path == "/var/lib/kubelet":
			hp.Path = kubeletRoot
		case hp.Path == "/var/lib/eddy/collector":
			hp.Path = stateDir
		}
	}
	ctr := &spec.Containers[0]
	for i := range ctr.VolumeMounts {
		if ctr.VolumeMounts[i].MountPath == "/var/lib/kubelet" {
			ctr.VolumeMounts[i].MountPath = kubeletRoot
		}
	}
	ctr.Args = append(ctr.Args, "--kubelet-root="+kubeletRoot)
	return nil
}

// analyzerTLS creates the analyzer's serving certificate, signed by the
// cluster's root CA, for its Service's names and ClusterIP.
func (c *Cluster) analyzerTLS(ctx context.Context, clusterIP string) error {
	rn := c.Env.RealNode()
	if rn == nil {
		return fmt.Errorf("the control plane has no real-node configuration")
	}
	names := []string{AnalyzerName, AnalyzerName + "." + EddySystem, analyzerHost, analyzerHost + "." + controlplane.ClusterDomain}
	crt, key, err := rn.IssueServingCert(analyzerHost, names, []net.IP{net.ParseIP(clusterIP)})
	if err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: EddySystem, Name: AnalyzerTLSSecret},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
	}
	if err := c.Env.Client.Create(ctx, secret); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create Secret %s: %w", AnalyzerTLSSecret, err)
	}
	return nil
}

// waitEddy waits for every Deployment in eddy-system to be available, the
// collector to be ready on the real node, and the webhook's CA to be in its
// configuration. On timeout it says which component is not, with its pods'
// states.
func (c *Cluster) waitEddy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		notReady := c.eddyNotReady(ctx)
		if len(notReady) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("eddy not ready after %s: %s", timeout, strings.Join(notReady, "; "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (c *Cluster) eddyNotReady(ctx context.Context) []string {
	cl := c.Env.Client
	var out []string
	for _, name := range []string{AnalyzerName, WebhookName, OperatorName} {
		var d appsv1.Deployment
		if err := cl.Get(ctx, client.ObjectKey{Namespace: EddySystem, Name: name}, &d); err != nil {
			out = append(out, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		if d.Status.AvailableReplicas < want {
			out = append(out, fmt.Sprintf("%s: %d/%d available%s", name, d.Status.AvailableReplicas, want, c.podStates(ctx, name)))
		}
	}
	var ds appsv1.DaemonSet
	if err := cl.Get(ctx, client.ObjectKey{Namespace: EddySystem, Name: CollectorName}, &ds); err != nil {
		out = append(out, fmt.Sprintf("%s: %v", CollectorName, err))
	} else if ds.Status.DesiredNumberScheduled < 1 || ds.Status.NumberReady < ds.Status.DesiredNumberScheduled {
		out = append(out, fmt.Sprintf("%s: %d/%d ready%s", CollectorName, ds.Status.NumberReady, ds.Status.DesiredNumberScheduled, c.podStates(ctx, CollectorName)))
	}
	objs, err := config.WebhookConfigurations()
	if err != nil {
		return append(out, err.Error())
	}
	for _, o := range objs {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(o.GroupVersionKind())
		if err := cl.Get(ctx, client.ObjectKey{Name: o.GetName()}, u); err != nil {
			out = append(out, fmt.Sprintf("%s %s: %v", o.GetKind(), o.GetName(), err))
			continue
		}
		hooks, _, _ := unstructured.NestedSlice(u.Object, "webhooks")
		for _, h := range hooks {
			ca, _, _ := unstructured.NestedString(h.(map[string]any), "clientConfig", "caBundle")
			if ca == "" {
				out = append(out, fmt.Sprintf("%s %s: no caBundle yet", o.GetKind(), o.GetName()))
				break
			}
		}
	}
	return out
}

// podStates describes the pods of one eddy component: phase, and why each
// container is not running.
func (c *Cluster) podStates(ctx context.Context, component string) string {
	var pods corev1.PodList
	if err := c.Env.Client.List(ctx, &pods, client.InNamespace(EddySystem),
		client.MatchingLabels{"app.kubernetes.io/component": strings.TrimPrefix(component, "eddy-")}); err != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, " [pod %s %s", p.Name, p.Status.Phase)
		for _, s := range p.Status.ContainerStatuses {
			switch {
			case s.State.Waiting != nil:
				fmt.Fprintf(&b, ", %s waiting: %s %s", s.Name, s.State.Waiting.Reason, s.State.Waiting.Message)
			case s.State.Terminated != nil:
				fmt.Fprintf(&b, ", %s terminated: %s %s", s.Name, s.State.Terminated.Reason, s.State.Terminated.Message)
			case s.LastTerminationState.Terminated != nil:
				t := s.LastTerminationState.Terminated
				fmt.Fprintf(&b, ", %s restarted %d× (last: exit %d %s)", s.Name, s.RestartCount, t.ExitCode, t.Message)
			}
		}
		b.WriteString("]")
	}
	return b.String()
}
