// Package cgroups maps cgroup v2 directories to the Kubernetes pods and
// containers the kubelet created them for.
//
// It understands the layouts of both kubelet cgroup drivers (cgroupfs and
// systemd) with the container runtimes that run pods (containerd, CRI-O,
// Docker via cri-dockerd), and resolves the cgroup ids that BPF programs see
// (bpf_get_current_cgroup_id: the inode of the cgroup's directory) back to
// those directories.
package cgroups

import (
	"fmt"
	"path"
	"regexp"
	"strings"
)

// Runtime names the container runtime that a container cgroup's name reveals.
type Runtime string

// Runtimes recognised from cgroup names. RuntimeUnknown is a bare container
// id, as the cgroupfs driver writes it for containerd and Docker alike.
const (
	RuntimeUnknown    Runtime = ""
	RuntimeContainerd Runtime = "containerd"
	RuntimeCRIO       Runtime = "cri-o"
	RuntimeDocker     Runtime = "docker"
)

// QOS classes as they appear in the kubelet's cgroup layout. Guaranteed pods
// sit directly under the kubepods cgroup.
const (
	QOSGuaranteed = "guaranteed"
	QOSBurstable  = "burstable"
	QOSBestEffort = "besteffort"
)

// Container is what a container cgroup's path says about it.
type Container struct {
	// PodUID is the pod's metadata.uid, with dashes.
	PodUID string
	// ContainerID is the runtime's id for the container (64 hex digits for
	// containerd, CRI-O and Docker), without any runtime prefix.
	ContainerID string
	Runtime     Runtime
	QOS         string
}

// podSegment matches the pod level of both drivers:
// cgroupfs "pod<uid>" and systemd "kubepods[-<qos>]-pod<uid_with_underscores>.slice".
var podSegment = regexp.MustCompile(`^(?:kubepods(?:-(burstable|besteffort))?-)?pod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12})(\.slice)?$`)

var containerIDPattern = regexp.MustCompile(`^[0-9a-f]{12,128}$`)

// containerPrefixes are the runtime-specific prefixes of a container's cgroup
// name; the systemd driver adds ".scope" to them.
var containerPrefixes = []struct {
	prefix  string
	runtime Runtime
}{
	{"cri-containerd-", RuntimeContainerd},
	{"crio-", RuntimeCRIO},
	{"docker-", RuntimeDocker},
	{"containerd-", RuntimeContainerd},
}

// ParsePath reads a cgroup path (absolute or relative to the cgroup2 mount)
// and reports the container it belongs to. ok is false for paths that are not
// a pod's container cgroup: the kubepods and QoS levels, the pod level itself,
// CRI-O's conmon cgroups, and anything outside kubepods. A container cgroup's
// own children (some runtimes nest a sub-cgroup) report their container.
func ParsePath(p string) (c Container, ok bool) {
	segs := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	for i, seg := range segs {
		m := podSegment.FindStringSubmatch(seg)
		if m == nil {
			continue
		}
		systemd := m[3] != ""
		if systemd != strings.HasPrefix(seg, "kubepods") {
			// "pod<uid>.slice" or "kubepods-pod<uid>" mix the two drivers.
			continue
		}
		if !underKubepods(segs[:i]) {
			continue
		}
		uid := m[2]
		if systemd {
			uid = strings.ReplaceAll(uid, "_", "-")
		} else if strings.Contains(uid, "_") {
			continue
		}
		if i+1 >= len(segs) {
			return Container{}, false
		}
		id, rt, isContainer := parseContainerSegment(segs[i+1])
		if !isContainer {
			return Container{}, false
		}
		return Container{
			PodUID:      strings.ToLower(uid),
			ContainerID: id,
			Runtime:     rt,
			QOS:         qosOf(segs[:i+1], m[1]),
		}, true
	}
	return Container{}, false
}

// underKubepods reports whether one of the ancestors is the kubelet's
// kubepods cgroup (it may itself be nested, e.g. under a kubelet --cgroup-root
// or a kind node's cgroup).
func underKubepods(ancestors []string) bool {
	for _, a := range ancestors {
		if a == "kubepods" || a == "kubepods.slice" {
			return true
		}
	}
	return false
}

func qosOf(segs []string, systemdQOS string) string {
	if systemdQOS != "" {
		return systemdQOS
	}
	if len(segs) >= 2 {
		switch parent := segs[len(segs)-2]; parent {
		case QOSBurstable, QOSBestEffort:
			return parent
		case "kubepods-burstable.slice":
			return QOSBurstable
		case "kubepods-besteffort.slice":
			return QOSBestEffort
		}
	}
	return QOSGuaranteed
}

func parseContainerSegment(seg string) (id string, rt Runtime, ok bool) {
	name := strings.TrimSuffix(seg, ".scope")
	if strings.HasPrefix(name, "crio-conmon-") {
		return "", "", false
	}
	for _, p := range containerPrefixes {
		if strings.HasPrefix(name, p.prefix) {
			id := strings.TrimPrefix(name, p.prefix)
			if !containerIDPattern.MatchString(id) {
				return "", "", false
			}
			return id, p.runtime, true
		}
	}
	if name != seg {
		// A .scope without a known runtime prefix.
		return "", "", false
	}
	if !containerIDPattern.MatchString(name) {
		return "", "", false
	}
	return name, RuntimeUnknown, true
}

// ParsePodPath reports the pod UID of a pod-level cgroup directory
// (".../kubepods/besteffort/pod<uid>" or its systemd equivalent).
func ParsePodPath(p string) (uid string, ok bool) {
	segs := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	last := segs[len(segs)-1]
	m := podSegment.FindStringSubmatch(last)
	if m == nil || !underKubepods(segs[:len(segs)-1]) {
		return "", false
	}
	return strings.ToLower(strings.ReplaceAll(m[2], "_", "-")), true
}

// SplitContainerID splits a pod status containerID ("containerd://<id>",
// "cri-o://<id>", "docker://<id>") into runtime and id.
func SplitContainerID(statusID string) (runtime, id string, err error) {
	rt, id, found := strings.Cut(statusID, "://")
	if !found || rt == "" || id == "" {
		return "", "", fmt.Errorf("container id %q: want <runtime>://<id>", statusID)
	}
	return rt, id, nil
}
