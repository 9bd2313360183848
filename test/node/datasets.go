package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/slowremote"
)

// Storage classes of the datasets' volumes. Nothing provisions them: each
// PersistentVolume is created for its claim.
const (
	// LocalStorageClass backs a dataset with a host folder.
	LocalStorageClass = "eddy-hostpath"
	// RemoteStorageClass backs a dataset with a FUSE mount of a remote.
	RemoteStorageClass = "eddy-remote"
)

// Dataset is a PersistentVolumeClaim bound to a volume on the real node.
type Dataset struct {
	// Namespace and Claim name the PersistentVolumeClaim pods mount.
	Namespace, Claim string
	// Volume is the PersistentVolume's name.
	Volume string
	// Source is the folder holding the data on the host: the volume itself
	// for a local dataset, what the remote serves for a remote one.
	Source string
	// MountPath is the host path of the volume (the FUSE mount point for a
	// remote dataset).
	MountPath string
	// RemoteURL is the WebDAV address (through the slow link) behind a
	// remote dataset, and Remote the server and link; Remote.Meter counts
	// the requests and bytes the remote served, independently of eddy.
	RemoteURL string
	Remote    *slowremote.Remote

	base      string
	mountArgs []string
	mount     *slowremote.Mount
}

// RemoteOptions shape the remote behind a FUSE dataset.
type RemoteOptions struct {
	// Delay is the link's one-way delay (each request waits twice that).
	Delay time.Duration
	// Bandwidth caps the link's throughput in bytes/s, shared by every
	// connection; 0 means no cap.
	Bandwidth int64
	// CacheMaxSize bounds the mount's VFS cache (rclone
	// --vfs-cache-max-size, e.g. "64M"); empty means unbounded.
	CacheMaxSize string
	// ReadChunkSize is the size of the mount's first ranged request at a
	// new offset (rclone --vfs-read-chunk-size, doubling as a read goes on
	// sequentially), and sets rclone's --buffer-size (read-ahead beyond
	// what is asked) to 0. Empty keeps rclone's defaults (128M chunks,
	// 16M of read-ahead), under which each small read at a random offset
	// of a large file streams megabytes from the remote.
	ReadChunkSize string
}

// AddLocalDataset creates a dataset in a host folder: populate fills it,
// then a hostPath PersistentVolume and a claim namespace/name bound to it
// are created. It returns once the claim is Bound.
func (c *Cluster) AddLocalDataset(ctx context.Context, namespace, name string, populate func(dir string) error) (*Dataset, error) {
	d := &Dataset{Namespace: namespace, Claim: name, Volume: namespace + "-" + name}
	d.Source = filepath.Join(c.Dir, "datasets", d.Volume, "data")
	d.MountPath = d.Source
	if err := os.MkdirAll(d.Source, 0o755); err != nil {
		return nil, err
	}
	if populate != nil {
		if err := populate(d.Source); err != nil {
			return nil, fmt.Errorf("populate dataset %s: %w", d.Volume, err)
		}
	}
	if err := c.bindVolume(ctx, d, LocalStorageClass); err != nil {
		return nil, err
	}
	c.datasets = append(c.datasets, d)
	return d, nil
}

// AddRemoteDataset creates a dataset behind a FUSE mount of a slow remote
// store, the shape of a Fluid runtime: populate fills the folder `rclone
// serve webdav` serves, a slowlink proxy between server and client adds
// opts' delay and bandwidth cap (test/slowremote), `rclone mount` (full VFS
// cache, empty at first) mounts it on the host, and a hostPath
// PersistentVolume of that mount point is bound to the claim
// namespace/name. Reset makes it cold again.
func (c *Cluster) AddRemoteDataset(ctx context.Context, namespace, name string, populate func(dir string) error, opts RemoteOptions) (d *Dataset, err error) {
	if c.tools.rclone == "" || c.tools.fusermount == "" {
		return nil, fmt.Errorf("remote datasets need rclone and fuse3: apt-get install rclone fuse3 (and start the cluster with Options.RemoteDatasets)")
	}
	d = &Dataset{Namespace: namespace, Claim: name, Volume: namespace + "-" + name}
	d.base = filepath.Join(c.Dir, "datasets", d.Volume)
	d.Source = filepath.Join(d.base, "remote")
	if err := os.MkdirAll(d.Source, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.stop()
		}
	}()
	if populate != nil {
		if err := populate(d.Source); err != nil {
			return nil, fmt.Errorf("populate dataset %s: %w", d.Volume, err)
		}
	}
	if d.Remote, err = slowremote.Start(d.Source, filepath.Join(d.base, "rclone"), opts.Delay, opts.Bandwidth); err != nil {
		return nil, err
	}
	d.RemoteURL = "http://" + d.Remote.Proxy.Addr()
	// Pods of any user read the mount (the prefetch sidecar does not run
	// as root); it stays read-only.
	d.mountArgs = []string{"--allow-other", "--read-only"}
	if opts.CacheMaxSize != "" {
		d.mountArgs = append(d.mountArgs, "--vfs-cache-max-size", opts.CacheMaxSize, "--vfs-cache-poll-interval", "2s")
	}
	if opts.ReadChunkSize != "" {
		d.mountArgs = append(d.mountArgs, "--vfs-read-chunk-size", opts.ReadChunkSize, "--buffer-size", "0")
	}
	if d.mount, err = d.Remote.Mount(d.base, d.mountArgs...); err != nil {
		return nil, err
	}
	d.MountPath = d.mount.Path
	if err := c.bindVolume(ctx, d, RemoteStorageClass); err != nil {
		return nil, err
	}
	c.datasets = append(c.datasets, d)
	return d, nil
}

// Reset makes a remote dataset cold again, as a fresh node would see it:
// it remounts the remote with an empty VFS cache and drops the page cache
// of the node. Call it between runs, with no pod reading the dataset.
func (d *Dataset) Reset() error {
	if d.Remote == nil {
		return fmt.Errorf("dataset %s is not remote", d.Volume)
	}
	if d.mount != nil {
		if err := d.mount.Close(); err != nil {
			return fmt.Errorf("reset dataset %s: %w", d.Volume, err)
		}
		d.mount = nil
	}
	m, err := d.Remote.Mount(d.base, d.mountArgs...)
	if err != nil {
		return fmt.Errorf("reset dataset %s: %w", d.Volume, err)
	}
	d.mount = m
	return DropPageCache()
}

// DropPageCache writes back dirty pages and drops the node's clean page
// cache, dentries and inodes (root only).
func DropPageCache() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		return fmt.Errorf("drop the page cache: %w", err)
	}
	return nil
}

// bindVolume creates the PersistentVolume and the claim, pre-bound to each
// other, and waits for the claim to be Bound.
func (c *Cluster) bindVolume(ctx context.Context, d *Dataset, class string) error {
	dirType := corev1.HostPathDirectory
	capacity := resource.MustParse("100Gi")
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: d.Volume, Labels: map[string]string{"eddy.io/dataset": d.Claim}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: capacity},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany, corev1.ReadOnlyMany},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: d.MountPath, Type: &dirType},
			},
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: d.Namespace, Name: d.Claim},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{c.NodeName}}},
			}}}},
		},
	}
	if err := c.Env.Client.Create(ctx, pv); err != nil {
		return fmt.Errorf("create PersistentVolume %s: %w", d.Volume, err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: d.Namespace}}
	if err := c.Env.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", d.Namespace, err)
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: d.Claim},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
			StorageClassName: &class,
			VolumeName:       d.Volume,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: capacity}},
		},
	}
	if err := c.Env.Client.Create(ctx, pvc); err != nil {
		return fmt.Errorf("create PersistentVolumeClaim %s/%s: %w", d.Namespace, d.Claim, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := c.Env.Client.Get(ctx, client.ObjectKeyFromObject(pvc), pvc); err == nil && pvc.Status.Phase == corev1.ClaimBound {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("claim %s/%s not Bound to %s after 60s (phase %q)", d.Namespace, d.Claim, d.Volume, pvc.Status.Phase)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop unmounts a remote dataset and stops its rclone processes.
func (d *Dataset) stop() {
	if d.mount != nil {
		_ = d.mount.Close()
		d.mount = nil
	}
	if d.Remote != nil {
		d.Remote.Close()
		d.Remote = nil
	}
}

// OptIn labels namespace for eddy (eddy.io/autotune=enabled) and creates
// policy in it, when not nil.
func (c *Cluster) OptIn(ctx context.Context, namespace string, policy *v1.AutotunePolicy) error {
	cl := c.Env.Client
	var ns corev1.Namespace
	if err := cl.Get(ctx, client.ObjectKey{Name: namespace}, &ns); err != nil {
		return err
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[v1.AutotuneLabel] = v1.AutotuneEnabled
	if err := cl.Update(ctx, &ns); err != nil {
		return fmt.Errorf("opt namespace %s in: %w", namespace, err)
	}
	if policy == nil {
		return nil
	}
	policy.Namespace = namespace
	if err := cl.Create(ctx, policy); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create AutotunePolicy %s/%s: %w", namespace, policy.Name, err)
	}
	return nil
}

// AutoPolicy is an AutotunePolicy named default that auto-applies actions
// from a confidence of 0.5, with prefetches bounded to maxBandwidth (a
// quantity) and a 10 Gi budget: what the real-node tests, the demo and the
// benchmark give an opted-in namespace.
func AutoPolicy(maxBandwidth string, actions ...v1.Action) *v1.AutotunePolicy {
	return &v1.AutotunePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1.AutotunePolicySpec{
			Mode:          v1.ModeAuto,
			AutoApply:     actions,
			MinConfidence: ptr.To(0.5),
			Prefetch:      &v1.PrefetchBounds{MaxBandwidth: ptr.To(resource.MustParse(maxBandwidth)), BudgetBytes: ptr.To(resource.MustParse("10Gi"))},
		},
	}
}
