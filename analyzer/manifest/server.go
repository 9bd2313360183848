package manifest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	manifestv1 "github.com/eddy-autotune/eddy/api/manifest/v1"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/analyzer"
)

// Handler serves the requests of manifestv1 (ParseRequest): a manifest by
// the AccessProfile's name, as the webhook renders it, or by workload and
// dataset; order=hot puts the hot set, hottest first, in Files (what a
// HotSet prefetcher reads), and order=ranges the files read at random
// offsets with the ranges read of each (what a Ranges prefetcher reads). The caller sends a Kubernetes bearer token of
// audience manifestv1.Audience (the webhook mounts one into the prefetcher): service
// accounts of the manifest's namespace may read it; anyone else needs `get`
// on accessprofiles.eddy.io in that namespace.
type Handler struct {
	Store  *Store
	Client client.Client
	Log    logr.Logger
	// ProfileName names a key's AccessProfile, for the short form of the path.
	ProfileName func(analyzer.Key) string
	// Limiter bounds the requests served, before any is authenticated: each
	// costs a TokenReview (and perhaps a SubjectAccessReview) at the API
	// server. Requests over it get 429 Too Many Requests. Nil: no bound.
	Limiter *rate.Limiter
}

// DefaultRate and DefaultBurst are the analyzer's bound on manifest
// requests: prefetchers fetch once per pod start, so bursts of pods
// starting together pass and a flood does not reach the API server.
const (
	DefaultRate  = 50
	DefaultBurst = 200
)

func sha256Sum(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:12]
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "only GET", http.StatusMethodNotAllowed)
		return
	}
	if h.Limiter != nil && !h.Limiter.Allow() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many manifest requests: retry later", http.StatusTooManyRequests)
		return
	}
	req, err := manifestv1.ParseRequest(r.URL)
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, manifestv1.ErrPath) {
			status = http.StatusNotFound
		}
		http.Error(w, err.Error(), status)
		return
	}
	ns := req.Namespace
	if status, why := h.authorize(r.Context(), r.Header.Get("Authorization"), ns); status != http.StatusOK {
		h.Log.V(1).Info("manifest request refused", "namespace", ns, "why", why)
		http.Error(w, why, status)
		return
	}
	var key analyzer.Key
	if req.Profile == "" {
		key = analyzer.Key{WorkloadNamespace: ns, WorkloadKind: req.Kind, WorkloadName: req.Workload, DatasetNamespace: ns, DatasetName: req.Dataset}
	} else {
		found := false
		if h.ProfileName != nil {
			key, found = h.Store.Find(func(k analyzer.Key) bool { return k.WorkloadNamespace == ns && h.ProfileName(k) == req.Profile })
		}
		if !found {
			http.Error(w, fmt.Sprintf("no manifest for profile %s in %s", req.Profile, ns), http.StatusNotFound)
			return
		}
	}
	m, ok := h.Store.Get(key, req.Limit, req.HotShare)
	if !ok {
		http.Error(w, fmt.Sprintf("no manifest for %s/%s in %s reading %s", key.WorkloadKind, key.WorkloadName, ns, key.DatasetName), http.StatusNotFound)
		return
	}
	switch req.Order {
	case manifestv1.OrderHot:
		m.Files = m.Hot
	case manifestv1.OrderRanges:
		m.Ranges, _ = h.Store.Ranges(key, req.Limit)
		m.Files = make([]string, len(m.Ranges))
		for i, f := range m.Ranges {
			m.Files[i] = f.Path
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(m)
}

// authorize checks the bearer token with a TokenReview, then the caller's
// right to the namespace's manifests.
func (h *Handler) authorize(ctx context.Context, header, ns string) (int, string) {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || token == "" {
		return http.StatusUnauthorized, "send a Kubernetes token: Authorization: Bearer <token>"
	}
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{manifestv1.Audience}}}
	if err := h.Client.Create(ctx, tr); err != nil {
		return http.StatusServiceUnavailable, "token review failed: " + err.Error()
	}
	if !tr.Status.Authenticated {
		return http.StatusUnauthorized, "token not authenticated: " + tr.Status.Error
	}
	if !slices.Contains(tr.Status.Audiences, manifestv1.Audience) {
		return http.StatusUnauthorized, "send a projected service-account token of audience " + manifestv1.Audience
	}
	u := tr.Status.User
	if rest, ok := strings.CutPrefix(u.Username, "system:serviceaccount:"); ok {
		if saNS, _, ok := strings.Cut(rest, ":"); ok && saNS == ns {
			return http.StatusOK, ""
		}
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Group: "eddy.io", Resource: "accessprofiles"},
	}}
	if err := h.Client.Create(ctx, sar); err != nil {
		return http.StatusServiceUnavailable, "access review failed: " + err.Error()
	}
	if !sar.Status.Allowed {
		return http.StatusForbidden, fmt.Sprintf("%s may not read manifests in %s (needs get on accessprofiles.eddy.io there)", u.Username, ns)
	}
	return http.StatusOK, ""
}
