package bpf

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eddy-autotune/eddy/internal/cgroupv2"
)

// kernelLinks counts, per program of r, the links the kernel holds to it:
// what is attached as the kernel sees it, not as r remembers.
func kernelLinks(t *testing.T, r *Recorder) map[string]int {
	t.Helper()
	hookOf := map[ebpf.ProgramID]string{}
	out := map[string]int{}
	for _, a := range r.attached {
		info, err := a.prog.Info()
		require.NoError(t, err)
		id, ok := info.ID()
		require.True(t, ok, "the kernel names program IDs")
		hookOf[id] = a.name
		out[a.name] = 0
	}
	var it link.Iterator
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		require.NoError(t, err)
		if h, ok := hookOf[info.Program]; ok {
			out[h]++
		}
	}
	require.NoError(t, it.Err())
	return out
}

// runCounts is how often the kernel ran each per-read program of r (the
// kernel's run-time statistics are on: loadRecorder leaves them on).
func runCounts(t *testing.T, r *Recorder) map[string]uint64 {
	t.Helper()
	s, err := r.Stats()
	require.NoError(t, err)
	out := map[string]uint64{}
	for _, p := range s.Programs {
		out[p.Hook] = p.RunCount
	}
	return out
}

// requireAttached checks, in the kernel's list of links, that the
// per-syscall and page-cache programs are attached (want) or not, and that
// the cgroup and thread exit hooks are attached either way.
func requireAttached(t *testing.T, r *Recorder, want bool, msg string) {
	t.Helper()
	links := kernelLinks(t, r)
	for _, a := range r.attached {
		if a.always || want {
			assert.NotZero(t, links[a.name], "%s: %s is attached in the kernel", msg, a.name)
			if a.events != nil {
				assert.Equal(t, len(a.events), links[a.name], "%s: %s has one link per trace event", msg, a.name)
			}
		} else {
			assert.Zero(t, links[a.name], "%s: %s is not attached in the kernel", msg, a.name)
		}
	}
	assert.Equal(t, want, r.Attached(), msg)
	s, err := r.Stats()
	require.NoError(t, err)
	n := 0
	for _, a := range r.attached {
		if a.always || want {
			n++
		}
	}
	assert.Equal(t, n, s.Attached, "%s: Stats().Attached", msg)
}

// TestProgramsAttachOnlyWhileACgroupIsAllowed: with nothing allowed, no
// per-syscall or page-cache program is attached and none runs, whoever reads;
// allowing a pod's cgroup tree attaches them before AllowTree returns, so a
// container created under it is recorded from its first read; they detach
// once the last allowed cgroup is gone, and attach again for the next.
func TestProgramsAttachOnlyWhileACgroupIsAllowed(t *testing.T) {
	r := loadRecorder(t, Options{})
	requireAttached(t, r.Recorder, false, "after Load, nothing allowed")

	path := filepath.Join(dataDir(t), "data.bin")
	writeFile(t, path, 1<<20)
	_, ino := keyOf(t, path)

	// Reads in a cgroup that is not allowed run none of the programs.
	other := newPodCgroup(t, "other")
	before := runCounts(t, r.Recorder)
	other.run(t, "seqread", path, "65536")
	after := runCounts(t, r.Recorder)
	for _, a := range r.attached {
		if !a.always {
			assert.Equal(t, before[a.name], after[a.name], "%s ran with nothing allowed", a.name)
		}
	}

	// A pod's cgroup allowed as a tree: attached before AllowTree returns.
	root := fmt.Sprintf("eddy-bpf-test-%d", os.Getpid())
	pod, err := cgroupv2.Create(filepath.Join(root, "kubepods/besteffort"), "podattach")
	require.NoError(t, err)
	podID, err := pod.ID()
	require.NoError(t, err)
	began := time.Now()
	require.NoError(t, r.AllowTree(podID))
	t.Logf("AllowTree with the programs detached took %v (attaching them)", time.Since(began))
	requireAttached(t, r.Recorder, true, "pod cgroup allowed")

	// Its container, made after: every byte of its first reads is recorded.
	ctrGroup, err := cgroupv2.Create(filepath.Join(root, "kubepods/besteffort/podattach"), "ctr")
	require.NoError(t, err)
	ctrID, err := ctrGroup.ID()
	require.NoError(t, err)
	ctr := &podCgroup{group: ctrGroup, id: ctrID}
	ctr.run(t, "seqread", path, "65536")
	assert.Equal(t, uint64(1<<20), r.drainCgroup(t, ctrID)[ino].ReadBytes, "the container's reads from its first")
	before = runCounts(t, r.Recorder)
	assert.NotZero(t, before["syscalls:sys_enter_{read,readv}"], "the read entry program ran")

	// The pod's cgroup leaves the list while its container runs: the
	// container, allowed by the kernel, is still observed.
	require.NoError(t, r.Disallow(podID))
	_, err = r.Drain(nil)
	require.NoError(t, err)
	requireAttached(t, r.Recorder, true, "pod disallowed, its container's cgroup still there")
	ctr.run(t, "seqread", path, "65536")
	assert.Equal(t, uint64(1<<20), r.drainCgroup(t, ctrID)[ino].ReadBytes, "the container is still recorded")

	// The container ends (its cgroup removed): the next drain detaches.
	require.NoError(t, ctrGroup.Remove())
	_, err = r.Drain(nil)
	require.NoError(t, err)
	requireAttached(t, r.Recorder, false, "last container gone, after a drain")
	before = runCounts(t, r.Recorder)
	other.run(t, "seqread", path, "65536")
	after = runCounts(t, r.Recorder)
	for _, a := range r.attached {
		if !a.always {
			assert.Equal(t, before[a.name], after[a.name], "%s ran after detaching", a.name)
		}
	}

	// Allow and Disallow of one cgroup: attached, recorded, detached at
	// once by Disallow.
	require.NoError(t, r.Allow(other.id))
	requireAttached(t, r.Recorder, true, "cgroup allowed again")
	other.run(t, "seqread", path, "65536")
	assert.Equal(t, uint64(1<<20), r.drainCgroup(t, other.id)[ino].ReadBytes, "recorded after attaching again")
	require.NoError(t, r.Disallow(other.id))
	requireAttached(t, r.Recorder, false, "its Disallow")

	// A cgroup the kernel allowed and user space silenced (eddy's own
	// containers) does not keep them attached.
	require.NoError(t, r.AllowTree(podID))
	silenced, err := cgroupv2.Create(filepath.Join(root, "kubepods/besteffort/podattach"), "eddy")
	require.NoError(t, err)
	silencedID, err := silenced.ID()
	require.NoError(t, err)
	require.NoError(t, r.Disallow(silencedID))
	require.NoError(t, r.Disallow(podID))
	_, err = r.Drain(nil)
	require.NoError(t, err)
	requireAttached(t, r.Recorder, false, "only a denied cgroup left")
	require.NoError(t, silenced.Remove())
}

// TestAttachAlways keeps the programs attached with nothing allowed.
func TestAttachAlways(t *testing.T) {
	r := loadRecorder(t, Options{AttachAlways: true})
	requireAttached(t, r.Recorder, true, "after Load")
	cg := allowedPod(t, r, "always")
	require.NoError(t, r.Disallow(cg.id))
	_, err := r.Drain(nil)
	require.NoError(t, err)
	requireAttached(t, r.Recorder, true, "after the last Disallow and a drain")
}
