package cgroups

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	uid    = "4f3c2a1b-9d8e-4c7b-a6f5-0e1d2c3b4a59"
	uidSD  = "4f3c2a1b_9d8e_4c7b_a6f5_0e1d2c3b4a59"
	ctrID  = "7a1e5c0b3f9d2e8a4c6b1d0f3e5a7c9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a"
	ctrID2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		name string
		path string
		want Container
		ok   bool
	}{
		{"cgroupfs besteffort containerd", "/kubepods/besteffort/pod" + uid + "/" + ctrID,
			Container{PodUID: uid, ContainerID: ctrID, QOS: QOSBestEffort}, true},
		{"cgroupfs burstable", "/kubepods/burstable/pod" + uid + "/" + ctrID,
			Container{PodUID: uid, ContainerID: ctrID, QOS: QOSBurstable}, true},
		{"cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + ctrID,
			Container{PodUID: uid, ContainerID: ctrID, QOS: QOSGuaranteed}, true},
		{"cgroupfs relative, no leading slash", "kubepods/besteffort/pod" + uid + "/" + ctrID,
			Container{PodUID: uid, ContainerID: ctrID, QOS: QOSBestEffort}, true},
		{"cgroupfs cri-o", "/kubepods/burstable/pod" + uid + "/crio-" + ctrID,
			Container{PodUID: uid, ContainerID: ctrID, Runtime: RuntimeCRIO, QOS: QOSBurstable}, true},
		{"systemd burstable containerd",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSD + ".slice/cri-containerd-" + ctrID + ".scope",
			Container{PodUID: uid, ContainerID: ctrID, Runtime: RuntimeContainerd, QOS: QOSBurstable}, true},
		{"systemd besteffort cri-o",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSD + ".slice/crio-" + ctrID + ".scope",
			Container{PodUID: uid, ContainerID: ctrID, Runtime: RuntimeCRIO, QOS: QOSBestEffort}, true},
		{"systemd guaranteed docker",
			"/kubepods.slice/kubepods-pod" + uidSD + ".slice/docker-" + ctrID + ".scope",
			Container{PodUID: uid, ContainerID: ctrID, Runtime: RuntimeDocker, QOS: QOSGuaranteed}, true},
		{"systemd under kubelet cgroup-root (kind node)",
			"/kubelet.slice/kubelet-kubepods.slice/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSD + ".slice/cri-containerd-" + ctrID + ".scope",
			Container{PodUID: uid, ContainerID: ctrID, Runtime: RuntimeContainerd, QOS: QOSBestEffort}, true},
		{"cgroupfs nested under a node cgroup", "/kubelet/kubepods/besteffort/pod" + uid + "/" + ctrID,
			Container{PodUID: uid, ContainerID: ctrID, QOS: QOSBestEffort}, true},
		{"sub-cgroup of a container reports the container",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSD + ".slice/cri-containerd-" + ctrID + ".scope/init.scope",
			Container{PodUID: uid, ContainerID: ctrID, Runtime: RuntimeContainerd, QOS: QOSBurstable}, true},
		{"upper-case uid normalised", "/kubepods/besteffort/pod4F3C2A1B-9D8E-4C7B-A6F5-0E1D2C3B4A59/" + ctrID,
			Container{PodUID: uid, ContainerID: ctrID, QOS: QOSBestEffort}, true},

		{"pod level is not a container", "/kubepods/besteffort/pod" + uid, Container{}, false},
		{"systemd pod level", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSD + ".slice", Container{}, false},
		{"qos level", "/kubepods/besteffort", Container{}, false},
		{"kubepods root", "/kubepods.slice", Container{}, false},
		{"cri-o conmon", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSD + ".slice/crio-conmon-" + ctrID + ".scope", Container{}, false},
		{"system service", "/system.slice/containerd.service", Container{}, false},
		{"pod-looking dir outside kubepods", "/user.slice/pod" + uid + "/" + ctrID, Container{}, false},
		{"unknown scope", "/kubepods.slice/kubepods-pod" + uidSD + ".slice/session-3.scope", Container{}, false},
		{"not a container id", "/kubepods/besteffort/pod" + uid + "/notahexid", Container{}, false},
		{"mixed drivers: systemd uid in cgroupfs layout", "/kubepods/besteffort/pod" + uidSD + "/" + ctrID, Container{}, false},
		{"empty", "", Container{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParsePath(tt.path)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParsePodPath(t *testing.T) {
	got, ok := ParsePodPath("/kubepods/besteffort/pod" + uid)
	assert.True(t, ok)
	assert.Equal(t, uid, got)
	got, ok = ParsePodPath("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSD + ".slice")
	assert.True(t, ok)
	assert.Equal(t, uid, got)
	_, ok = ParsePodPath("/kubepods/besteffort/pod" + uid + "/" + ctrID)
	assert.False(t, ok)
}

func TestSplitContainerID(t *testing.T) {
	rt, id, err := SplitContainerID("containerd://" + ctrID)
	require.NoError(t, err)
	assert.Equal(t, "containerd", rt)
	assert.Equal(t, ctrID, id)
	rt, id, err = SplitContainerID("cri-o://" + ctrID)
	require.NoError(t, err)
	assert.Equal(t, "cri-o", rt)
	assert.Equal(t, ctrID, id)
	_, _, err = SplitContainerID(ctrID)
	assert.ErrorContains(t, err, ctrID)
	_, _, err = SplitContainerID("")
	assert.Error(t, err)
}

// TestResolverWalksDirectories uses an ordinary directory tree: the resolver
// only needs directories and their inodes, exactly as on cgroupfs.
func TestResolverWalksDirectories(t *testing.T) {
	root := t.TempDir()
	c1 := filepath.Join(root, "kubepods", "besteffort", "pod"+uid, ctrID)
	c2 := filepath.Join(root, "kubepods.slice", "kubepods-burstable.slice", "kubepods-burstable-pod"+uidSD+".slice", "cri-containerd-"+ctrID2+".scope")
	for _, d := range []string{c1, c2, filepath.Join(root, "system.slice", "containerd.service")} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	id1, err := CgroupID(c1)
	require.NoError(t, err)
	id2, err := CgroupID(c2)
	require.NoError(t, err)

	r := NewResolver(root, ResolverOptions{MinRescanInterval: time.Hour, MaxAge: time.Hour})
	e, ok := r.Lookup(id1)
	require.True(t, ok)
	assert.Equal(t, "/kubepods/besteffort/pod"+uid+"/"+ctrID, e.Path)
	assert.Equal(t, uid, e.PodUID)
	e, ok = r.LookupContainer(ctrID2)
	require.True(t, ok)
	assert.Equal(t, id2, e.ID)
	assert.Equal(t, RuntimeContainerd, e.Runtime)
	assert.Equal(t, 1, r.Scans(), "known ids must come from the cache")

	// A container that appears later is found only after the rate limit
	// allows a rescan, or when a rescan is forced.
	ctrID3 := "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	c3 := filepath.Join(root, "kubepods", "besteffort", "pod"+uid, ctrID3)
	require.NoError(t, os.Mkdir(c3, 0o755))
	_, ok = r.LookupContainer(ctrID3)
	assert.False(t, ok, "rescan must be rate-limited")
	assert.Equal(t, 1, r.Scans())
	clock := time.Now().Add(2 * time.Hour)
	r.now = func() time.Time { return clock }
	e, ok = r.LookupContainer(ctrID3)
	require.True(t, ok)
	assert.Equal(t, 2, r.Scans())
	id3, _ := CgroupID(c3)
	assert.Equal(t, id3, e.ID)

	_, ok = r.Lookup(12345678)
	assert.False(t, ok)

	// A cgroup nested in a container later (a runtime or the container's
	// own init may create one) is found once the cache is older than MaxAge.
	nested := filepath.Join(c1, "init.scope")
	require.NoError(t, os.Mkdir(nested, 0o755))
	es, ok := r.ContainerCgroups(ctrID)
	require.True(t, ok)
	assert.Len(t, es, 1, "within MaxAge the cache answers")
	clock = clock.Add(time.Hour)
	es, ok = r.ContainerCgroups(ctrID)
	require.True(t, ok)
	require.Len(t, es, 2)
	assert.Equal(t, id1, es[0].ID, "the container's own cgroup comes first")
	nestedID, _ := CgroupID(nested)
	assert.Equal(t, nestedID, es[1].ID)
	e, ok = r.Lookup(nestedID)
	require.True(t, ok)
	assert.Equal(t, ctrID, e.ContainerID)
}

func TestResolverMissingRoot(t *testing.T) {
	r := NewResolver(filepath.Join(t.TempDir(), "nope"), ResolverOptions{})
	err := r.Rescan()
	assert.ErrorContains(t, err, "nope")
}
