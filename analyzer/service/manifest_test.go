package service_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"testing"
	"time"

	manifestv1 "github.com/eddy-autotune/eddy/api/manifest/v1"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"

	"github.com/eddy-autotune/eddy/analyzer/service"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

// TestManifestEndpoint serves the access manifest over HTTPS with tokens
// issued and reviewed by a real API server: a service account of the
// workload's namespace reads it, one of another namespace is refused, no
// token is refused, and the manifest survives an analyzer restart.
func TestManifestEndpoint(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	for _, ns := range []string{"ml", "other", "eddy-system"} {
		require.NoError(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	tokenOf := func(ns string, audiences ...string) string {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: ns}}
		if err := env.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
			require.NoError(t, err)
		}
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr(int64(600))}}
		require.NoError(t, env.Client.SubResource("token").Create(ctx, sa, tr))
		return tr.Status.Token
	}
	token := func(ns string) string { return tokenOf(ns, manifestv1.Audience) }
	mlToken, otherToken := token("ml"), token("other")
	// The pod's own token, of the API server's audience, is refused: a
	// prefetcher sends the projected token the webhook mounts.
	mlAPIToken := tokenOf("ml")

	stateDir := t.TempDir()
	startSvc := func() (*service.Service, context.CancelFunc, chan error) {
		svc, err := service.New(ctx, service.Options{
			Client: env.Client, Log: testr.New(t), GRPCAddr: "127.0.0.1:0", ManifestAddr: "127.0.0.1:0",
			StateDir: stateDir, FlushInterval: time.Hour,
		})
		require.NoError(t, err)
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- svc.Run(runCtx) }()
		return svc, cancel, done
	}
	svc, stop, done := startSvc()
	ws := shuffledWindows(t)
	// One file was also read at two random offsets.
	ranged := ws[len(ws)-1].Files[0]
	ranged.RandSteps = 2
	ranged.ReadRanges = []*accessv1.ReadRange{{Offset: 4096, End: 8192}, {Offset: 65536, End: 69632}}
	ship(t, svc.Addr(), ws)
	require.NoError(t, svc.Flush(ctx))

	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		// The endpoint's certificate is self-signed here; in a cluster it is
		// issued for the Service name and verified.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
	}}
	getPath := func(addr, tok, pathAndQuery string) (int, manifestv1.Document, string) {
		req, err := http.NewRequest(http.MethodGet, "https://"+addr+pathAndQuery, nil)
		require.NoError(t, err)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := httpc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var m manifestv1.Document
		if resp.StatusCode == http.StatusOK {
			require.NoError(t, json.Unmarshal(body, &m))
		}
		return resp.StatusCode, m, string(body)
	}
	get := func(addr, tok, query string) (int, manifestv1.Document, string) {
		return getPath(addr, tok, "/v1/manifests/ml/Job/train/images"+query)
	}

	code, _, body := get(svc.ManifestAddr(), mlAPIToken, "")
	assert.Equal(t, http.StatusUnauthorized, code, "a token of another audience: %s", body)
	code, m, body := get(svc.ManifestAddr(), mlToken, "")
	require.Equal(t, http.StatusOK, code, body)
	require.Len(t, m.Files, 200)
	lastEpoch := lastEpochOrder(ws)
	assert.Equal(t, lastEpoch, m.Files, "files come in the order of the latest epoch")

	code, m, body = getPath(svc.ManifestAddr(), mlToken, "/v1/manifests/ml/job-train.images")
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, lastEpoch, m.Files, "the webhook's short form (namespace/profile) names the same manifest")
	code, _, _ = getPath(svc.ManifestAddr(), mlToken, "/v1/manifests/ml/job-other.images")
	assert.Equal(t, http.StatusNotFound, code)

	code, m, _ = get(svc.ManifestAddr(), mlToken, "?limit=10")
	assert.Equal(t, http.StatusOK, code)
	assert.Len(t, m.Files, 10)
	assert.True(t, m.Truncated)

	code, m, _ = get(svc.ManifestAddr(), mlToken, "?order=hot&hotShare=0.5")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, m.Hot, m.Files, "order=hot serves the hot set as the file list")
	assert.InDelta(t, 100, len(m.Files), 2, "half the bytes of 200 equally read files are in ~100 files")

	code, m, _ = get(svc.ManifestAddr(), mlToken, "?order=ranges")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, []string{ranged.GetPath()}, m.Files, "order=ranges lists the files read at random offsets")
	assert.Equal(t, []manifestv1.FileRanges{{Path: ranged.GetPath(), Ranges: []manifestv1.Range{{4096, 8192}, {65536, 69632}}}}, m.Ranges)

	code, _, body = get(svc.ManifestAddr(), otherToken, "")
	assert.Equal(t, http.StatusForbidden, code, body)
	assert.Contains(t, body, "system:serviceaccount:other:reader")
	code, _, _ = get(svc.ManifestAddr(), "", "")
	assert.Equal(t, http.StatusUnauthorized, code)
	code, _, _ = get(svc.ManifestAddr(), "not-a-token", "")
	assert.Equal(t, http.StatusUnauthorized, code)
	code, _, body = get(svc.ManifestAddr(), mlToken, "?limit=-1")
	assert.Equal(t, http.StatusBadRequest, code, body)

	stop()
	require.NoError(t, <-done)
	svc2, stop2, done2 := startSvc()
	code, m, body = get(svc2.ManifestAddr(), mlToken, "")
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, lastEpoch, m.Files, "the manifest survives a restart")
	stop2()
	require.NoError(t, <-done2)
}

// lastEpochOrder is the order in which files began their latest pass.
func lastEpochOrder(ws []*accessv1.AccessWindow) []string {
	last := map[string]int64{}
	for _, w := range ws {
		for _, f := range w.Files {
			if f.LastPassUnixNano > last[f.Path] {
				last[f.Path] = f.LastPassUnixNano
			}
		}
	}
	paths := make([]string, 0, len(last))
	for p := range last {
		paths = append(paths, p)
	}
	sortBy(paths, func(p string) int64 { return last[p] })
	return paths
}

func ptr[T any](v T) *T { return &v }

func sortBy(ps []string, key func(string) int64) {
	sort.SliceStable(ps, func(i, j int) bool {
		if key(ps[i]) != key(ps[j]) {
			return key(ps[i]) < key(ps[j])
		}
		return ps[i] < ps[j]
	})
}
