package manifest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/analyzer"
)

// MaxLimit bounds the files one response carries.
const MaxLimit = 100_000

// Handler serves GET /v1/manifests/{namespace}/{profile} (the AccessProfile's
// name, as the webhook renders it) or
// /v1/manifests/{namespace}/{kind}/{workload}/{dataset},
// with optional ?limit=N (≤ MaxLimit, default MaxLimit), ?hotShare=F
// (default 0.8) and ?order=hot, which puts the hot set, hottest first, in
// Files (what a HotSet prefetcher reads). The caller sends a Kubernetes bearer token: service
// accounts of the manifest's namespace may read it; anyone else needs `get`
// on accessprofiles.eddy.io in that namespace.
type Handler struct {
	Store  *Store
	Client client.Client
	Log    logr.Logger
	// ProfileName names a key's AccessProfile, for the short form of the path.
	ProfileName func(analyzer.Key) string
}

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
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/manifests/"), "/")
	if !strings.HasPrefix(r.URL.Path, "/v1/manifests/") || (len(parts) != 2 && len(parts) != 4) || anyEmpty(parts) {
		http.Error(w, "want /v1/manifests/{namespace}/{profile} or /v1/manifests/{namespace}/{workloadKind}/{workloadName}/{dataset}", http.StatusNotFound)
		return
	}
	ns := parts[0]
	limit := MaxLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > MaxLimit {
			http.Error(w, fmt.Sprintf("limit %q: want an integer in 1..%d", v, MaxLimit), http.StatusBadRequest)
			return
		}
		limit = n
	}
	hot := 0.8
	if v := r.URL.Query().Get("hotShare"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 1 {
			http.Error(w, fmt.Sprintf("hotShare %q: want a number in (0, 1]", v), http.StatusBadRequest)
			return
		}
		hot = f
	}
	order := r.URL.Query().Get("order")
	if order != "" && order != "access" && order != "hot" {
		http.Error(w, fmt.Sprintf("order %q: want access (default) or hot", order), http.StatusBadRequest)
		return
	}
	if status, why := h.authorize(r.Context(), r.Header.Get("Authorization"), ns); status != http.StatusOK {
		h.Log.V(1).Info("manifest request refused", "namespace", ns, "why", why)
		http.Error(w, why, status)
		return
	}
	var key analyzer.Key
	if len(parts) == 4 {
		key = analyzer.Key{WorkloadNamespace: ns, WorkloadKind: parts[1], WorkloadName: parts[2], DatasetNamespace: ns, DatasetName: parts[3]}
	} else {
		found := false
		if h.ProfileName != nil {
			key, found = h.Store.Find(func(k analyzer.Key) bool { return k.WorkloadNamespace == ns && h.ProfileName(k) == parts[1] })
		}
		if !found {
			http.Error(w, fmt.Sprintf("no manifest for profile %s in %s", parts[1], ns), http.StatusNotFound)
			return
		}
	}
	m, ok := h.Store.Get(key, limit, hot)
	if !ok {
		http.Error(w, fmt.Sprintf("no manifest for %s/%s in %s reading %s", key.WorkloadKind, key.WorkloadName, ns, key.DatasetName), http.StatusNotFound)
		return
	}
	if order == "hot" {
		m.Files = m.Hot
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(m)
}

func anyEmpty(ss []string) bool {
	for _, s := range ss {
		if s == "" {
			return true
		}
	}
	return false
}

// authorize checks the bearer token with a TokenReview, then the caller's
// right to the namespace's manifests.
func (h *Handler) authorize(ctx context.Context, header, ns string) (int, string) {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || token == "" {
		return http.StatusUnauthorized, "send a Kubernetes token: Authorization: Bearer <token>"
	}
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}
	if err := h.Client.Create(ctx, tr); err != nil {
		return http.StatusServiceUnavailable, "token review failed: " + err.Error()
	}
	if !tr.Status.Authenticated {
		return http.StatusUnauthorized, "token not authenticated: " + tr.Status.Error
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
