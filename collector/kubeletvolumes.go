package collector

import (
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// csiPluginDir is the kubelet's folder for CSI volumes; their mounts sit one
// level deeper, in "<pv-name>/mount".
const csiPluginDir = "kubernetes.io~csi"

// kubeletVolumes tells which of a pod's volumes lives on a device, from the
// kubelet's pods folder (<root>/pods/<uid>/volumes/<plugin>/<name>). Files
// whose path is unknown (their event was lost) can still be attributed to a
// dataset this way when their device is that of exactly one volume.
type kubeletVolumes struct {
	podsDir string
	ttl     time.Duration
	now     func() time.Time

	mu    sync.Mutex
	cache map[string]podVolumeDevs
}

type podVolumeDevs struct {
	// names holds, per device (kernel encoding), the volume folder names on
	// it: the pod volume's name, or the PV's name for CSI volumes.
	names   map[uint64][]string
	expires time.Time
}

func newKubeletVolumes(podsDir string, ttl time.Duration) *kubeletVolumes {
	return &kubeletVolumes{podsDir: podsDir, ttl: ttl, now: time.Now, cache: map[string]podVolumeDevs{}}
}

// onDevice returns the volume folder names of the pod on device dev. Volumes
// on the filesystem that holds the pods folder itself (emptyDir, configMap,
// secrets on the node's disk) are never returned: their device says nothing
// about which of them a file is in.
func (k *kubeletVolumes) onDevice(podUID string, dev uint64) []string {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.cache[podUID]
	if !ok || now.After(e.expires) {
		e = podVolumeDevs{names: k.scan(podUID), expires: now.Add(k.ttl)}
		k.cache[podUID] = e
		for uid, old := range k.cache {
			if now.After(old.expires) {
				delete(k.cache, uid)
			}
		}
	}
	return e.names[dev]
}

func (k *kubeletVolumes) scan(podUID string) map[uint64][]string {
	podDir := filepath.Join(k.podsDir, podUID)
	var podSt unix.Stat_t
	if unix.Stat(podDir, &podSt) != nil {
		return nil
	}
	out := map[uint64][]string{}
	plugins, err := os.ReadDir(filepath.Join(podDir, "volumes"))
	if err != nil {
		return nil
	}
	for _, plugin := range plugins {
		vols, err := os.ReadDir(filepath.Join(podDir, "volumes", plugin.Name()))
		if err != nil {
			continue
		}
		for _, v := range vols {
			p := filepath.Join(podDir, "volumes", plugin.Name(), v.Name())
			if plugin.Name() == csiPluginDir {
				p = filepath.Join(p, "mount")
			}
			var st unix.Stat_t
			if unix.Stat(p, &st) != nil || st.Dev == podSt.Dev {
				continue
			}
			dev := kernelDev(st.Dev)
			out[dev] = append(out[dev], v.Name())
		}
	}
	return out
}
