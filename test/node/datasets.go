package node

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/test/slowlink"
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
	// RemoteURL is the WebDAV server behind a remote dataset.
	RemoteURL string
	// Link is the latency and bandwidth proxy between the mount and the
	// remote when RemoteOptions asked for one.
	Link *slowlink.Proxy
	// Meter counts the requests and bytes the remote serves, independently
	// of eddy.
	Meter *slowremote.Meter

	cacheDir  string
	mountArgs []string
	mountProc *process
	logDir    string
	rclone    string
	procs     []*process
}

// RemoteOptions shape the remote behind a FUSE dataset.
type RemoteOptions struct {
	// BandwidthLimit caps the remote's throughput (rclone --bwlimit, e.g.
	// "20M"); empty means no cap.
	BandwidthLimit string
	// Latency, when positive, puts a slowlink proxy between the mount and
	// the remote that delays each direction by it; LinkBandwidth (bytes/s,
	// 0: none) caps that link across all connections.
	Latency       time.Duration
	LinkBandwidth int64
	// CacheMaxSize bounds the mount's VFS cache (rclone
	// --vfs-cache-max-size, e.g. "64M"); empty means unbounded.
	CacheMaxSize string
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

// AddRemoteDataset creates a dataset behind a FUSE mount of a remote store,
// the shape of a Fluid runtime: populate fills the folder `rclone serve
// webdav` serves on loopback, `rclone mount` (full VFS cache in the
// cluster folder) mounts it on the host, and a hostPath PersistentVolume of
// that mount point is bound to the claim namespace/name. Between them, a
// Meter counts what the remote serves and, when opts.Latency is set, a
// slowlink proxy adds latency and a shared bandwidth cap.
func (c *Cluster) AddRemoteDataset(ctx context.Context, namespace, name string, populate func(dir string) error, opts RemoteOptions) (d *Dataset, err error) {
	if c.tools.rclone == "" || c.tools.fusermount == "" {
		return nil, fmt.Errorf("remote datasets need rclone and fuse3: apt-get install rclone fuse3 (and start the cluster with Options.RemoteDatasets)")
	}
	d = &Dataset{Namespace: namespace, Claim: name, Volume: namespace + "-" + name}
	base := filepath.Join(c.Dir, "datasets", d.Volume)
	d.Source = filepath.Join(base, "remote")
	d.MountPath = filepath.Join(base, "mnt")
	for _, p := range []string{d.Source, d.MountPath, filepath.Join(base, "cache")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, err
		}
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
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	d.RemoteURL = "http://" + addr
	serveArgs := []string{"serve", "webdav", d.Source, "--addr", addr, "--read-only"}
	if opts.BandwidthLimit != "" {
		serveArgs = append(serveArgs, "--bwlimit", opts.BandwidthLimit)
	}
	serve, err := startProcess(ctx, c.logDir, "rclone-serve-"+d.Volume, c.tools.rclone, serveArgs)
	if err != nil {
		return nil, err
	}
	d.procs = append(d.procs, serve)
	if err := waitTCP(ctx, addr, 15*time.Second); err != nil {
		return nil, fmt.Errorf("rclone serve webdav on %s: %w; log %s", addr, err, serve.log)
	}
	if d.Meter, err = slowremote.StartMeter("127.0.0.1:0", addr); err != nil {
		return nil, err
	}
	mountURL := "http://" + d.Meter.Addr()
	if opts.Latency > 0 {
		if d.Link, err = slowlink.Start("127.0.0.1:0", d.Meter.Addr(), opts.Latency, opts.LinkBandwidth); err != nil {
			return nil, err
		}
		mountURL = "http://" + d.Link.Addr()
	}
	d.cacheDir, d.logDir, d.rclone = filepath.Join(base, "cache"), c.logDir, c.tools.rclone
	d.mountArgs = []string{
		"mount", ":webdav:", d.MountPath, "--webdav-url", mountURL, "--read-only",
		"--vfs-cache-mode", "full", "--cache-dir", d.cacheDir,
		"--allow-other", "--dir-cache-time", "10s",
	}
	if opts.CacheMaxSize != "" {
		d.mountArgs = append(d.mountArgs, "--vfs-cache-max-size", opts.CacheMaxSize, "--vfs-cache-poll-interval", "2s")
	}
	if err := d.mount(ctx); err != nil {
		return nil, err
	}
	if err := c.bindVolume(ctx, d, RemoteStorageClass); err != nil {
		return nil, err
	}
	c.datasets = append(c.datasets, d)
	return d, nil
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

// mount starts rclone mount with an empty cache and waits for the mount.
func (d *Dataset) mount(ctx context.Context) error {
	if err := os.RemoveAll(d.cacheDir); err != nil {
		return err
	}
	if err := os.MkdirAll(d.cacheDir, 0o755); err != nil {
		return err
	}
	mount, err := startProcess(ctx, d.logDir, "rclone-mount-"+d.Volume, d.rclone, d.mountArgs)
	if err != nil {
		return err
	}
	d.mountProc = mount
	if err := waitMount(ctx, d.MountPath, "fuse", 20*time.Second); err != nil {
		return fmt.Errorf("rclone mount %s: %w; log %s ends:\n%s", d.MountPath, err, mount.log, logTail(mount.log, 2000))
	}
	return nil
}

// unmount detaches the FUSE mount and stops its rclone.
func (d *Dataset) unmount() {
	if d.mountProc == nil {
		return
	}
	_ = syscallUnmount(d.MountPath)
	d.mountProc.stop(5 * time.Second)
	d.mountProc = nil
}

// ResetCache makes the next read of a remote dataset cold: it remounts it
// with an empty VFS cache and drops the kernel's page cache (the whole
// machine's: a FUSE file's pages are dropped with the mount, but a warm
// dentry or another dataset's pages would still blur a benchmark). No pod
// may have the dataset mounted while it runs.
func (d *Dataset) ResetCache(ctx context.Context) error {
	if d.RemoteURL == "" {
		return fmt.Errorf("dataset %s is not remote: only remote datasets have a cache to reset", d.Volume)
	}
	d.unmount()
	if err := d.mount(ctx); err != nil {
		return err
	}
	return DropPageCache()
}

// DropPageCache writes back dirty pages and drops the kernel's page cache,
// dentries and inodes.
func DropPageCache() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		return fmt.Errorf("drop the page cache (needs root): %w", err)
	}
	return nil
}

// stop unmounts a remote dataset and stops its rclone processes and proxies.
func (d *Dataset) stop() {
	d.unmount()
	if d.Link != nil {
		_ = d.Link.Close()
	}
	if d.Meter != nil {
		_ = d.Meter.Close()
	}
	for i := len(d.procs) - 1; i >= 0; i-- {
		d.procs[i].stop(5 * time.Second)
	}
	d.procs = nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitMount waits until path is a mount point whose file system type
// starts with fsType.
func waitMount(ctx context.Context, path, fsType string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if f, err := os.Open("/proc/self/mountinfo"); err == nil {
			s := bufio.NewScanner(f)
			for s.Scan() {
				fields := strings.Fields(s.Text())
				for i, fld := range fields {
					if fld == "-" && i+1 < len(fields) && len(fields) > 4 && unescapeMount(fields[4]) == path && strings.HasPrefix(fields[i+1], fsType) {
						f.Close()
						return nil
					}
				}
			}
			f.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not a %s mount after %s", path, fsType, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func syscallUnmount(path string) error { return syscall.Unmount(path, syscall.MNT_DETACH) }
