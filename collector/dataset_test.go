package collector

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

func TestDatasetResolution(t *testing.T) {
	fluidSC := "fluid"
	claims := map[string]*corev1.PersistentVolumeClaim{
		"ml/imagenet": {ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "imagenet", Labels: map[string]string{
			"fluid.io/dataset-id": "ml-imagenet", "fluid.io/s-ml-imagenet": "true"}}, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "ml-imagenet"}},
		"ml/coco": {ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "coco"}, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "ml-coco", StorageClassName: &fluidSC}},
		// Bound to a Fluid PV without Fluid's labels on the claim (a
		// static claim of a Fluid volume): the PV's CSI attributes name it.
		"ml/static":        {ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "static"}, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-static"}},
		"ml/scratch":       {ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "scratch"}, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-ebs"}},
		"ml/train-0-cache": {ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "train-0-cache"}},
	}
	volumes := map[string]*corev1.PersistentVolume{
		"pv-static": {ObjectMeta: metav1.ObjectMeta{Name: "pv-static"}, Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
			CSI: &corev1.CSIPersistentVolumeSource{Driver: "fuse.csi.fluid.io", VolumeAttributes: map[string]string{"runtime_name": "laion", "runtime_namespace": "datasets"}}}}},
		"pv-ebs": {ObjectMeta: metav1.ObjectMeta{Name: "pv-ebs"}, Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
			CSI: &corev1.CSIPersistentVolumeSource{Driver: "ebs.csi.aws.com"}}}},
	}
	claimCalls := 0
	r := NewDatasetResolver(
		func(_ context.Context, ns, name string) (*corev1.PersistentVolumeClaim, error) {
			claimCalls++
			if c, ok := claims[ns+"/"+name]; ok {
				return c, nil
			}
			return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "persistentvolumeclaims"}, name)
		},
		func(_ context.Context, name string) (*corev1.PersistentVolume, error) {
			if v, ok := volumes[name]; ok {
				return v, nil
			}
			return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "persistentvolumes"}, name)
		}, 0)

	pvc := func(name, claim string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "train-0"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "main", VolumeMounts: []corev1.VolumeMount{
				{Name: "data", MountPath: "/data"},
				{Name: "train", MountPath: "/data/train/"},
				{Name: "coco", MountPath: "/coco"},
				{Name: "laion", MountPath: "/laion"},
				{Name: "scratch", MountPath: "/scratch"},
				{Name: "shards", MountPath: "/shards", SubPath: "v2/shards"},
				{Name: "cache", MountPath: "/cache"},
				{Name: "gone", MountPath: "/gone"},
				{Name: "tmp", MountPath: "/tmp"},
				{Name: "inline", MountPath: "/inline"},
			}}},
			InitContainers: []corev1.Container{{Name: "fetch", VolumeMounts: []corev1.VolumeMount{{Name: "train", MountPath: "/in"}}}},
			Volumes: []corev1.Volume{
				{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/mnt/data"}}},
				pvc("train", "imagenet"),
				pvc("coco", "coco"),
				pvc("laion", "static"),
				pvc("scratch", "scratch"),
				pvc("shards", "imagenet"),
				{Name: "cache", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}},
				pvc("gone", "deleted-claim"),
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "inline", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "fuse.csi.fluid.io", VolumeAttributes: map[string]string{"runtime_name": "wiki"}}}},
			},
		},
	}
	tests := []struct {
		name, container, path string
		want                  *accessv1.DatasetRef
		rel                   string
	}{
		{"longest mountPath wins: fluid via labels", "main", "/data/train/n01/img_1.JPEG",
			&accessv1.DatasetRef{Namespace: "ml", Name: "imagenet", Source: "Fluid", Pvc: "imagenet"}, "n01/img_1.JPEG"},
		{"shorter prefix: hostPath volume", "main", "/data/val/x.bin",
			&accessv1.DatasetRef{Namespace: "ml", Name: "data", Source: "Volume"}, "val/x.bin"},
		{"prefix must end at a path boundary", "main", "/data/trainer.py",
			&accessv1.DatasetRef{Namespace: "ml", Name: "data", Source: "Volume"}, "trainer.py"},
		{"mount root itself", "main", "/data/train",
			&accessv1.DatasetRef{Namespace: "ml", Name: "imagenet", Source: "Fluid", Pvc: "imagenet"}, ""},
		{"unclean path", "main", "/data/./train//a/../b",
			&accessv1.DatasetRef{Namespace: "ml", Name: "imagenet", Source: "Fluid", Pvc: "imagenet"}, "b"},
		{"fluid via storage class", "main", "/coco/2017/a.jpg",
			&accessv1.DatasetRef{Namespace: "ml", Name: "coco", Source: "Fluid", Pvc: "coco"}, "2017/a.jpg"},
		{"fluid via the bound PV's CSI driver", "main", "/laion/part-0001.parquet",
			&accessv1.DatasetRef{Namespace: "datasets", Name: "laion", Source: "Fluid", Pvc: "static"}, "part-0001.parquet"},
		{"plain PVC", "main", "/scratch/ckpt/step-100.pt",
			&accessv1.DatasetRef{Namespace: "ml", Name: "scratch", Source: "PVC", Pvc: "scratch"}, "ckpt/step-100.pt"},
		{"subPath: relative to the volume root", "main", "/shards/000.tar",
			&accessv1.DatasetRef{Namespace: "ml", Name: "imagenet", Source: "Fluid", Pvc: "imagenet"}, "v2/shards/000.tar"},
		{"generic ephemeral volume's claim", "main", "/cache/x",
			&accessv1.DatasetRef{Namespace: "ml", Name: "train-0-cache", Source: "PVC", Pvc: "train-0-cache"}, "x"},
		{"claim not found: still named by the claim", "main", "/gone/x",
			&accessv1.DatasetRef{Namespace: "ml", Name: "deleted-claim", Source: "PVC", Pvc: "deleted-claim"}, "x"},
		{"emptyDir", "main", "/tmp/lock",
			&accessv1.DatasetRef{Namespace: "ml", Name: "tmp", Source: "Volume"}, "lock"},
		{"inline Fluid CSI volume", "main", "/inline/a",
			&accessv1.DatasetRef{Namespace: "ml", Name: "wiki", Source: "Fluid"}, "a"},
		{"init container's own mounts", "fetch", "/in/n01/a.JPEG",
			&accessv1.DatasetRef{Namespace: "ml", Name: "imagenet", Source: "Fluid", Pvc: "imagenet"}, "n01/a.JPEG"},
		{"container filesystem: no dataset", "main", "/usr/lib/python3/os.py", nil, "/usr/lib/python3/os.py"},
		{"unknown container: no dataset", "sidecar", "/data/x", nil, "/data/x"},
		{"unresolved relative path: no dataset", "main", "data/x", nil, "data/x"},
		{"unknown path", "main", "", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds, rel := r.Resolve(context.Background(), pod, tt.container, tt.path)
			assert.Equal(t, tt.want, ds)
			assert.Equal(t, tt.rel, rel)
		})
	}
	before := claimCalls
	for range 3 {
		r.Resolve(context.Background(), pod, "main", "/scratch/x")
	}
	assert.Equal(t, before, claimCalls, "claims must be cached")
}
