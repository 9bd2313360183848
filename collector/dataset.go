package collector

import (
	"context"
	"path"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// How Fluid marks what it manages. Fluid names a dataset's PVC after the
// dataset (same namespace and name), labels it "fluid.io/dataset-id" and
// "fluid.io/s-<namespace>-<dataset>", and binds it to a PV served by its
// FUSE CSI driver whose attributes name the runtime (named after the dataset).
const (
	fluidDatasetIDLabel     = "fluid.io/dataset-id"
	fluidStorageLabelPrefix = "fluid.io/s-"
	fluidManagedByKey       = "CSI.storage.k8s.io/managedBy"
	fluidCSIDriver          = "fuse.csi.fluid.io"
	fluidStorageClass       = "fluid"
	fluidRuntimeNameAttr    = "runtime_name"
	fluidRuntimeNSAttr      = "runtime_namespace"
)

// ClaimLookup returns a PersistentVolumeClaim.
type ClaimLookup func(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error)

// VolumeLookup returns a PersistentVolume.
type VolumeLookup func(ctx context.Context, name string) (*corev1.PersistentVolume, error)

// DatasetResolver maps a path inside a container to the dataset it lies in:
// the pod volume mounted at the longest matching mountPath, then the volume's
// PVC, then the Fluid Dataset behind a Fluid-managed PVC. It caches claims
// and volumes and is safe for concurrent use.
type DatasetResolver struct {
	claims  ClaimLookup
	volumes VolumeLookup
	ttl     time.Duration
	now     func() time.Time

	mu      sync.Mutex
	kubelet *kubeletVolumes
	claimC  map[string]cached[*corev1.PersistentVolumeClaim]
	volumeC map[string]cached[*corev1.PersistentVolume]
}

type cached[T any] struct {
	v       T
	err     error
	expires time.Time
}

// NewDatasetResolver returns a resolver that looks claims and volumes up
// with the given functions (either may be nil: that step is skipped) and
// caches them for ttl (default 5 minutes).
func NewDatasetResolver(claims ClaimLookup, volumes VolumeLookup, ttl time.Duration) *DatasetResolver {
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	return &DatasetResolver{
		claims: claims, volumes: volumes, ttl: ttl, now: time.Now,
		claimC:  map[string]cached[*corev1.PersistentVolumeClaim]{},
		volumeC: map[string]cached[*corev1.PersistentVolume]{},
	}
}

// Resolve returns the dataset that the absolute path p (as the container
// sees it) lies in and p relative to the dataset root. A path on no volume
// (the container's own filesystem) has no dataset: ds is nil and rel is p.
func (r *DatasetResolver) Resolve(ctx context.Context, pod *corev1.Pod, container, p string) (ds *accessv1.DatasetRef, rel string) {
	if p == "" || !path.IsAbs(p) {
		return nil, p
	}
	p = path.Clean(p)
	mount, ok := longestMount(findMounts(pod, container), p)
	if !ok {
		return nil, p
	}
	rel = strings.TrimPrefix(strings.TrimPrefix(p, path.Clean(mount.MountPath)), "/")
	if mount.SubPath != "" {
		// The volume's root is above the mount: keep paths relative to it.
		rel = path.Join(mount.SubPath, rel)
	}
	vol := findVolume(pod, mount.Name)
	if vol == nil {
		return &accessv1.DatasetRef{Namespace: pod.Namespace, Name: mount.Name, Source: string(v1alpha1.DatasetSourceVolume)}, rel
	}
	return r.volumeDataset(ctx, pod, vol), rel
}

// SetKubeletPodsDir lets ResolveDevice look volumes up by device in the
// kubelet's pods folder (usually /var/lib/kubelet/pods).
func (r *DatasetResolver) SetKubeletPodsDir(dir string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kubelet = newKubeletVolumes(dir, r.ttl/10)
}

// ResolveDevice returns the dataset of a file whose path is unknown, by its
// device (kernel encoding): when exactly one of the pod's volumes is mounted
// from that device, the file is in it. Otherwise it returns nil.
func (r *DatasetResolver) ResolveDevice(ctx context.Context, pod *corev1.Pod, dev uint64) *accessv1.DatasetRef {
	r.mu.Lock()
	kv := r.kubelet
	r.mu.Unlock()
	if kv == nil {
		return nil
	}
	names := kv.onDevice(string(pod.UID), dev)
	var found *corev1.Volume
	for _, name := range names {
		vol := r.volumeByFolder(ctx, pod, name)
		if vol == nil || (found != nil && found.Name != vol.Name) {
			return nil
		}
		found = vol
	}
	if found == nil {
		return nil
	}
	return r.volumeDataset(ctx, pod, found)
}

// volumeByFolder maps a kubelet volume folder name to the pod's volume: the
// folder is named after the volume, or after the bound PV for CSI volumes.
func (r *DatasetResolver) volumeByFolder(ctx context.Context, pod *corev1.Pod, name string) *corev1.Volume {
	if v := findVolume(pod, name); v != nil {
		return v
	}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		claim := claimName(pod, v)
		if claim == "" {
			continue
		}
		if pvc, err := r.claim(ctx, pod.Namespace, claim); err == nil && pvc != nil && pvc.Spec.VolumeName == name {
			return v
		}
	}
	return nil
}

func claimName(pod *corev1.Pod, vol *corev1.Volume) string {
	switch {
	case vol.PersistentVolumeClaim != nil:
		return vol.PersistentVolumeClaim.ClaimName
	case vol.Ephemeral != nil:
		// Generic ephemeral volumes get a PVC named <pod>-<volume>.
		return pod.Name + "-" + vol.Name
	}
	return ""
}

// volumeDataset names the dataset a pod volume holds.
func (r *DatasetResolver) volumeDataset(ctx context.Context, pod *corev1.Pod, vol *corev1.Volume) *accessv1.DatasetRef {
	claim := claimName(pod, vol)
	if claim == "" && vol.CSI != nil && vol.CSI.Driver == fluidCSIDriver {
		if name := vol.CSI.VolumeAttributes[fluidRuntimeNameAttr]; name != "" {
			ns := vol.CSI.VolumeAttributes[fluidRuntimeNSAttr]
			if ns == "" {
				ns = pod.Namespace
			}
			return &accessv1.DatasetRef{Namespace: ns, Name: name, Source: string(v1alpha1.DatasetSourceFluid)}
		}
	}
	if claim == "" {
		return &accessv1.DatasetRef{Namespace: pod.Namespace, Name: vol.Name, Source: string(v1alpha1.DatasetSourceVolume)}
	}
	return r.claimDataset(ctx, pod.Namespace, claim)
}

func (r *DatasetResolver) claimDataset(ctx context.Context, namespace, claim string) *accessv1.DatasetRef {
	ds := &accessv1.DatasetRef{Namespace: namespace, Name: claim, Source: string(v1alpha1.DatasetSourcePVC), Pvc: claim}
	pvc, err := r.claim(ctx, namespace, claim)
	if err != nil || pvc == nil {
		// Without the PVC the claim name is still the best name we have.
		return ds
	}
	if fluidClaim(pvc) {
		ds.Source = string(v1alpha1.DatasetSourceFluid)
		return ds
	}
	if pvc.Spec.VolumeName == "" {
		return ds
	}
	pv, err := r.volume(ctx, pvc.Spec.VolumeName)
	if err != nil || pv == nil || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != fluidCSIDriver {
		return ds
	}
	ds.Source = string(v1alpha1.DatasetSourceFluid)
	if name := pv.Spec.CSI.VolumeAttributes[fluidRuntimeNameAttr]; name != "" {
		ds.Name = name
		if ns := pv.Spec.CSI.VolumeAttributes[fluidRuntimeNSAttr]; ns != "" {
			ds.Namespace = ns
		}
	}
	return ds
}

// fluidClaim reports whether Fluid created the claim for a dataset of the
// same name.
func fluidClaim(pvc *corev1.PersistentVolumeClaim) bool {
	if _, ok := pvc.Labels[fluidDatasetIDLabel]; ok {
		return true
	}
	for k := range pvc.Labels {
		if strings.HasPrefix(k, fluidStorageLabelPrefix) {
			return true
		}
	}
	if pvc.Annotations[fluidManagedByKey] == "fluid" {
		return true
	}
	return pvc.Spec.StorageClassName != nil && *pvc.Spec.StorageClassName == fluidStorageClass
}

func (r *DatasetResolver) claim(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error) {
	if r.claims == nil {
		return nil, nil
	}
	return cachedGet(r, r.claimC, namespace+"/"+name, func() (*corev1.PersistentVolumeClaim, error) {
		return r.claims(ctx, namespace, name)
	})
}

func (r *DatasetResolver) volume(ctx context.Context, name string) (*corev1.PersistentVolume, error) {
	if r.volumes == nil {
		return nil, nil
	}
	return cachedGet(r, r.volumeC, name, func() (*corev1.PersistentVolume, error) {
		return r.volumes(ctx, name)
	})
}

func cachedGet[T any](r *DatasetResolver, c map[string]cached[T], key string, get func() (T, error)) (T, error) {
	now := r.now()
	r.mu.Lock()
	if e, ok := c[key]; ok && now.Before(e.expires) {
		r.mu.Unlock()
		return e.v, e.err
	}
	r.mu.Unlock()
	v, err := get()
	ttl := r.ttl
	if err != nil {
		ttl /= 10
	}
	r.mu.Lock()
	c[key] = cached[T]{v: v, err: err, expires: now.Add(ttl)}
	r.mu.Unlock()
	return v, err
}

func findMounts(pod *corev1.Pod, container string) []corev1.VolumeMount {
	if container == "" {
		// A container seen in the kernel before the pod's status named it:
		// any of the workload's own containers may have read the file.
		var all []corev1.VolumeMount
		for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
			for _, c := range list {
				if !injectedByEddy(pod, c.Name) {
					all = append(all, c.VolumeMounts...)
				}
			}
		}
		return all
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == container {
			return c.VolumeMounts
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == container {
			return c.VolumeMounts
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if c.Name == container {
			return c.VolumeMounts
		}
	}
	return nil
}

func longestMount(mounts []corev1.VolumeMount, p string) (corev1.VolumeMount, bool) {
	best, found := corev1.VolumeMount{}, false
	for _, m := range mounts {
		mp := path.Clean(m.MountPath)
		if p != mp && !strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/") {
			continue
		}
		if !found || len(mp) > len(path.Clean(best.MountPath)) {
			best, found = m, true
		}
	}
	return best, found
}

func findVolume(pod *corev1.Pod, name string) *corev1.Volume {
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == name {
			return &pod.Spec.Volumes[i]
		}
	}
	return nil
}

// ClientClaimLookup looks claims up with a clientset.
func ClientClaimLookup(cs kubernetes.Interface) ClaimLookup {
	return func(ctx context.Context, namespace, name string) (*corev1.PersistentVolumeClaim, error) {
		return cs.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{})
	}
}

// ClientVolumeLookup looks persistent volumes up with a clientset.
func ClientVolumeLookup(cs kubernetes.Interface) VolumeLookup {
	return func(ctx context.Context, name string) (*corev1.PersistentVolume, error) {
		return cs.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
	}
}
