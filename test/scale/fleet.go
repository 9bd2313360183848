package scale

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/collector/ship"
)

// bearer is a collector's token, sent with every call as the collector
// sends its projected token.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{accessv1.AuthorizationMetadata: "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// podRef is what a collector reports a pod's reads under.
type podRef struct {
	namespace, name, uid, workload string
}

// fleet is one collector identity per node, each with the collector's own
// shipper (durable buffer, resend until acknowledged) and its own gRPC
// connection: what the analyzer sees of a cluster's DaemonSet. The windows'
// records are made up (no kernel here), for the node's real pods.
type fleet struct {
	s        Size
	shippers []*ship.Shipper
	conns    []*grpc.ClientConn
	pods     [][]podRef
	offered  atomic.Int64
	lost     atomic.Int64
	wg       sync.WaitGroup
}

// startFleet opens a shipper per node in dir and starts shipping to addr,
// trusting caFile, each node's first window a share of the interval after
// the previous node's (nodes do not drain in step).
func startFleet(ctx context.Context, s Size, dir, addr, caFile string, tokens map[string]string, pods []corev1.Pod) (*fleet, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", caFile)
	}
	byNode := map[string][]podRef{}
	for _, p := range pods {
		byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], podRef{p.Namespace, p.Name, string(p.UID), p.Labels[appLabel]})
	}
	f := &fleet{s: s}
	i := 0
	for node, token := range tokens {
		// A real collector may buffer two hours of windows in its own
		// memory; a thousand of them in this one process may not.
		sh, err := ship.Open(ship.Options{Dir: filepath.Join(dir, node), Node: node, MaxBuffered: fleetMaxBuffered, Log: logr.Discard()})
		if err != nil {
			f.close()
			return nil, err
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots})),
			grpc.WithPerRPCCredentials(bearer(token)))
		if err != nil {
			sh.Close()
			f.close()
			return nil, err
		}
		f.shippers, f.conns, f.pods = append(f.shippers, sh), append(f.conns, conn), append(f.pods, byNode[node])
		offset := time.Duration(i) * s.Interval / time.Duration(len(tokens))
		f.wg.Add(2)
		go func() {
			defer f.wg.Done()
			_ = sh.Run(ctx, accessv1.NewAccessIntakeClient(conn))
		}()
		go func(pods []podRef) {
			defer f.wg.Done()
			f.drain(ctx, sh, pods, offset)
		}(byNode[node])
		i++
	}
	return f, nil
}

// drain enqueues a window of the node's pods' reads every interval, as the
// collector's drain loop does.
func (f *fleet) drain(ctx context.Context, sh *ship.Shipper, pods []podRef, offset time.Duration) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(offset):
	}
	tick := time.NewTicker(f.s.Interval)
	defer tick.Stop()
	for n := 0; ; n++ {
		w := f.window(pods, n)
		if _, err := sh.Enqueue(w); err != nil {
			f.lost.Add(1)
		}
		f.offered.Add(int64(len(w.Files)))
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// window is the n-th window of a node: each pod read the next FilesPerPod
// files of its workload's dataset whole, front to back.
func (f *fleet) window(pods []podRef, n int) *accessv1.AccessWindow {
	const fileSize = 4 << 20
	end := time.Now()
	start := end.Add(-f.s.Interval)
	w := &accessv1.AccessWindow{StartUnixNano: start.UnixNano(), EndUnixNano: end.UnixNano()}
	for _, p := range pods {
		for k := range f.s.FilesPerPod {
			file := (n*f.s.FilesPerPod + k) % f.s.DatasetFiles
			at := start.Add(time.Duration(k+1) * f.s.Interval / time.Duration(f.s.FilesPerPod+1))
			w.Files = append(w.Files, &accessv1.FileAccess{
				Workload: &accessv1.WorkloadRef{Namespace: p.namespace, Kind: "Deployment", ApiVersion: "apps/v1", Name: p.workload, Rule: string(v1.RuleObject), Object: p.workload},
				Dataset:  &accessv1.DatasetRef{Namespace: p.namespace, Name: Dataset, Source: "PVC", Pvc: Dataset},
				Pod:      p.name, PodUid: p.uid, Container: "c",
				Path:    fmt.Sprintf("/data/%s/part-%05d", p.workload, file),
				ReadOps: 16, ReadBytes: fileSize, FileSize: fileSize, SeqSteps: 15, Passes: 1, MaxOffset: fileSize,
				FirstAccessUnixNano: at.Add(-50 * time.Millisecond).UnixNano(), LastAccessUnixNano: at.UnixNano(),
			})
		}
	}
	return w
}

// fleetMaxBuffered bounds each simulated collector's unacknowledged
// windows (3 minutes at 10 s): at the full size a thousand shippers holding
// the default 720 took the benchmark's process past 10 GiB when the
// analyzer fell behind. Windows dropped for it are counted (stats).
const fleetMaxBuffered = 18

// stats sums the shippers' counters: windows unacknowledged, failed Ship
// calls and windows lost (buffer full included).
func (f *fleet) stats() (buffered int, failures, lost uint64) {
	for _, sh := range f.shippers {
		st := sh.Stats()
		buffered += st.Buffered
		failures += st.Failures
		for _, n := range st.Lost {
			lost += n
		}
	}
	return buffered, failures, lost
}

// wait waits for the shippers and drain loops to return (after ctx ends)
// and closes them.
func (f *fleet) wait() {
	f.wg.Wait()
	f.close()
}

func (f *fleet) close() {
	for _, c := range f.conns {
		c.Close()
	}
	for _, sh := range f.shippers {
		sh.Close()
	}
}
