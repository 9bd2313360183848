package collector

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

// TestResolveDeviceFromKubeletPodsFolder lays out a kubelet pods folder with
// real mounts (tmpfs, each its own device) where the kubelet would mount a
// CSI volume and an NFS volume, and an emptyDir on the folder's own disk.
func TestResolveDeviceFromKubeletPodsFolder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount tmpfs")
	}
	pods := t.TempDir()
	const uid = "0b7e6a52-3f1d-4c2a-9e8b-5d4c3b2a1f09"
	vols := filepath.Join(pods, uid, "volumes")
	csiMount := filepath.Join(vols, "kubernetes.io~csi", "pv-imagenet", "mount")
	nfs := filepath.Join(vols, "kubernetes.io~nfs", "shared")
	empty := filepath.Join(vols, "kubernetes.io~empty-dir", "scratch")
	for _, d := range []string{csiMount, nfs, empty} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	for _, d := range []string{csiMount, nfs} {
		require.NoError(t, unix.Mount("tmpfs", d, "tmpfs", 0, "size=1m"), "mount tmpfs on %s", d)
		t.Cleanup(func() { _ = unix.Unmount(d, unix.MNT_DETACH) })
	}
	dev := func(p string) uint64 {
		var st unix.Stat_t
		require.NoError(t, unix.Stat(p, &st))
		return kernelDev(st.Dev)
	}

	claims := map[string]*corev1.PersistentVolumeClaim{
		"ml/imagenet": {ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "imagenet", Labels: map[string]string{"fluid.io/dataset-id": "ml-imagenet"}},
			Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-imagenet"}},
	}
	r := NewDatasetResolver(func(_ context.Context, ns, name string) (*corev1.PersistentVolumeClaim, error) {
		return claims[ns+"/"+name], nil
	}, nil, 0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "train-0", UID: uid},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{
			{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "imagenet"}}},
			{Name: "shared", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs", Path: "/"}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		}},
	}
	ctx := context.Background()
	assert.Nil(t, r.ResolveDevice(ctx, pod, dev(csiMount)), "without the pods folder nothing is resolved by device")

	r.SetKubeletPodsDir(pods)
	assert.Equal(t, &accessv1.DatasetRef{Namespace: "ml", Name: "imagenet", Source: "Fluid", Pvc: "imagenet"},
		r.ResolveDevice(ctx, pod, dev(csiMount)), "CSI folder is named after the PV")
	assert.Equal(t, &accessv1.DatasetRef{Namespace: "ml", Name: "shared", Source: "Volume"}, r.ResolveDevice(ctx, pod, dev(nfs)))
	assert.Nil(t, r.ResolveDevice(ctx, pod, dev(empty)), "volumes on the node's own disk are ambiguous")
	assert.Nil(t, r.ResolveDevice(ctx, pod, 12345), "unknown device")
	other := pod.DeepCopy()
	other.UID = "ffffffff-3f1d-4c2a-9e8b-5d4c3b2a1f09"
	assert.Nil(t, r.ResolveDevice(ctx, other, dev(nfs)), "another pod's folder")
}
