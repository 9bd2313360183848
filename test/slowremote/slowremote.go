// Package slowremote is a real slow remote store behind a FUSE mount with a
// local cache, the shape of a Fluid runtime: rclone serves a folder over
// WebDAV, a slowlink proxy adds latency and a bandwidth cap between server
// and client, and every mount is `rclone mount --vfs-cache-mode full` with
// its own cache, so each new mount starts cold. The prefetcher's tests and
// the demo share it.
package slowremote

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/eddy-autotune/eddy/test/slowlink"
)

// Unavailable says why this machine cannot run a remote, or "" when it can.
func Unavailable() string {
	if os.Geteuid() != 0 {
		return "mounting FUSE file systems needs root"
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Sprintf("no /dev/fuse: %v", err)
	}
	for _, bin := range []string{"rclone", "fusermount3"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Sprintf("%s is not installed (apt-get install rclone fuse3)", bin)
		}
	}
	return ""
}

// Remote serves a folder through a slow link.
type Remote struct {
	// Src is the folder served; Dir holds rclone's config and logs.
	Src, Dir string
	// Proxy is the slow link clients connect to; Meter, behind it,
	// counts the requests and bytes the server answers.
	Proxy  *slowlink.Proxy
	Meter  *Meter
	serve  *exec.Cmd
	exited chan struct{}
}

// Start serves src through a link with the given one-way delay and
// bandwidth (bytes/s); dir (created if needed) holds rclone's files. Close
// stops it.
func Start(src, dir string, delay time.Duration, bandwidth int64) (*Remote, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	target := "127.0.0.1:" + port
	r := &Remote{Src: src, Dir: dir, exited: make(chan struct{})}
	r.serve = exec.Command("rclone", "serve", "webdav", src, "--addr", target,
		"--config", r.config(), "--log-file", filepath.Join(dir, "serve.log"))
	// Its own process group: a Ctrl-C meant for the parent must not stop
	// the server before the parent has unmounted.
	r.serve.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.serve.Start(); err != nil {
		return nil, fmt.Errorf("rclone serve webdav: %w", err)
	}
	go func() { _ = r.serve.Wait(); close(r.exited) }()
	if err := waitPort(target, r.exited, 20*time.Second); err != nil {
		r.Close()
		return nil, fmt.Errorf("rclone serve webdav %s: %w (log in %s)", src, err, filepath.Join(dir, "serve.log"))
	}
	if r.Meter, err = StartMeter("127.0.0.1:0", target); err != nil {
		r.Close()
		return nil, err
	}
	if r.Proxy, err = slowlink.Start("127.0.0.1:0", r.Meter.Addr(), delay, bandwidth); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// The remote has no real configuration; an empty file of our own keeps
// rclone away from the user's.
func (r *Remote) config() string { return filepath.Join(r.Dir, "rclone.conf") }

// Close stops the proxy and the server. Unmount the mounts first.
func (r *Remote) Close() {
	if r.Proxy != nil {
		_ = r.Proxy.Close()
	}
	if r.Meter != nil {
		_ = r.Meter.Close()
	}
	_ = r.serve.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		_ = r.serve.Process.Kill()
		<-r.exited
	}
}

// Mount is one rclone mount of the remote.
type Mount struct {
	// Path is the mount point; Cache is rclone's VFS cache; Log its log.
	Path, Cache, Log string
	cmd              *exec.Cmd
	exited           chan struct{}
	waitErr          error
}

// Mount mounts the remote at dir/mnt with an empty cache in dir/cache and
// returns once the mount is up. rclone runs in the foreground as our child
// with a parent-death signal, so even a killed parent leaves no mount
// behind (rclone unmounts on SIGTERM), and in its own process group, so a
// Ctrl-C reaches only the parent, which unmounts in order; Close unmounts it.
// extra are more `rclone mount` flags (e.g. --allow-other for a mount that
// containers running as other users read).
func (r *Remote) Mount(dir string, extra ...string) (*Mount, error) {
	m := &Mount{Path: filepath.Join(dir, "mnt"), Cache: filepath.Join(dir, "cache"), Log: filepath.Join(dir, "mount.log"),
		exited: make(chan struct{})}
	if err := os.RemoveAll(m.Cache); err != nil {
		return nil, err
	}
	for _, d := range []string{m.Path, m.Cache} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	m.cmd = exec.Command("rclone", "mount", ":webdav:", m.Path,
		"--webdav-url", "http://"+r.Proxy.Addr(),
		"--vfs-cache-mode", "full", "--cache-dir", m.Cache,
		"--dir-cache-time", "1h", "--config", r.config(), "--log-file", m.Log)
	m.cmd.Args = append(m.cmd.Args, extra...)
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("rclone mount %s: %w", m.Path, err)
	}
	go func() { m.waitErr = m.cmd.Wait(); close(m.exited) }()
	deadline := time.Now().Add(20 * time.Second)
	for !IsMountPoint(m.Path) {
		select {
		case <-m.exited:
			log, _ := os.ReadFile(m.Log)
			return nil, fmt.Errorf("rclone mount %s exited: %v: %s", m.Path, m.waitErr, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.Close()
			return nil, fmt.Errorf("rclone mount %s: not mounted after 20s (log in %s)", m.Path, m.Log)
		}
	}
	return m, nil
}

// Close unmounts and waits for rclone to exit (killing it after 10s). It
// returns what went wrong unmounting, if anything.
func (m *Mount) Close() error {
	err := Unmount(m.Path)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
	return err
}

// Unmount detaches mnt, lazily if it is busy; its rclone then exits.
// It fails only when mnt could not be detached at all.
func Unmount(mnt string) error {
	if !IsMountPoint(mnt) {
		return nil
	}
	out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput()
	if err == nil {
		return nil
	}
	// Busy (a process still holds a file or its working directory there):
	// detach it lazily. The path is free for a new mount at once; the old
	// one goes when its last user lets go, and its rclone with it.
	if lazy := exec.Command("fusermount3", "-uz", mnt).Run(); lazy != nil {
		return fmt.Errorf("fusermount3 -u %s: %v: %s; lazily: %w", mnt, err, bytes.TrimSpace(out), lazy)
	}
	return nil
}

// CleanStale detaches FUSE mounts under prefix whose rclone is gone
// (ENOTCONN), left by a run killed before its cleanup, and returns them.
func CleanStale(prefix string) []string {
	var cleaned []string
	for _, p := range mountPoints() {
		if !strings.HasPrefix(p, prefix) {
			continue
		}
		if _, err := os.Stat(p); errors.Is(err, syscall.ENOTCONN) {
			_ = exec.Command("fusermount3", "-uz", p).Run()
			cleaned = append(cleaned, p)
		}
	}
	return cleaned
}

// IsMountPoint reports whether p is a mount point.
func IsMountPoint(p string) bool {
	for _, m := range mountPoints() {
		if m == p {
			return true
		}
	}
	return false
}

func mountPoints() []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			out = append(out, f[4])
		}
	}
	return out
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port), nil
}

func waitPort(addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening after %s", timeout)
		}
	}
}
