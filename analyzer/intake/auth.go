package intake

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Peer is an authenticated collector.
type Peer struct {
	// User is the service account the token belongs to.
	User string
	// Node is the node the token is bound to (through the collector's pod):
	// the only node whose pods the collector may report.
	Node string
}

// Authenticator verifies a collector's bearer token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Peer, error)
}

// Admission decides whether a record may be taken from a collector: its pod
// must run on the collector's node, in a namespace opted in. It returns ""
// when the record is admitted, else why not (a metric label).
type Admission interface {
	Admit(ctx context.Context, peer Peer, rec *accessv1.FileAccess) string
}

// Extra keys the API server puts in a TokenReview of a token bound to a pod.
const (
	nodeNameExtra = "authentication.kubernetes.io/node-name"
	podNameExtra  = "authentication.kubernetes.io/pod-name"
)

// TokenReviews authenticates collectors with TokenReviews of tokens of
// accessv1.Audience: the token must belong to one of Users and be bound to
// a pod, whose node it names. Verdicts are cached for CacheFor (default one
// minute) so that a collector's calls cost one review a minute.
type TokenReviews struct {
	// Client creates TokenReviews (and reads pods when the review names a
	// pod but not its node: API servers before 1.30).
	Client client.Client
	// Users are the accepted service-account user names, e.g.
	// system:serviceaccount:eddy-system:eddy-collector.
	Users []string
	// CacheFor is how long a verdict is kept (default 1m).
	CacheFor time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]verdict
}

type verdict struct {
	peer    Peer
	err     error
	expires time.Time
}

// maxCachedTokens bounds the verdict cache (tokens rotate; a flood of bad
// tokens must not grow it).
const maxCachedTokens = 4096

// Authenticate implements Authenticator.
func (a *TokenReviews) Authenticate(ctx context.Context, token string) (Peer, error) {
	now := time.Now()
	if a.Now != nil {
		now = a.Now()
	}
	key := sha256.Sum256([]byte(token))
	a.mu.Lock()
	if v, ok := a.cache[key]; ok && now.Before(v.expires) {
		a.mu.Unlock()
		return v.peer, v.err
	}
	a.mu.Unlock()
	peer, err := a.review(ctx, token)
	var transient *reviewUnavailable
	if errors.As(err, &transient) {
		return Peer{}, err
	}
	ttl := a.CacheFor
	if ttl <= 0 {
		ttl = time.Minute
	}
	a.mu.Lock()
	if a.cache == nil || len(a.cache) >= maxCachedTokens {
		a.cache = map[[32]byte]verdict{}
	}
	a.cache[key] = verdict{peer: peer, err: err, expires: now.Add(ttl)}
	a.mu.Unlock()
	return peer, err
}

type reviewUnavailable struct{ err error }

func (e *reviewUnavailable) Error() string { return "token review unavailable: " + e.err.Error() }
func (e *reviewUnavailable) Unwrap() error { return e.err }

func (a *TokenReviews) review(ctx context.Context, token string) (Peer, error) {
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{accessv1.Audience}}}
	if err := a.Client.Create(ctx, tr); err != nil {
		return Peer{}, &reviewUnavailable{err}
	}
	if !tr.Status.Authenticated {
		return Peer{}, fmt.Errorf("token not authenticated for audience %s: %s", accessv1.Audience, tr.Status.Error)
	}
	u := tr.Status.User
	allowed := false
	for _, name := range a.Users {
		allowed = allowed || u.Username == name
	}
	if !allowed {
		return Peer{}, fmt.Errorf("%s is not a collector (want one of %s)", u.Username, strings.Join(a.Users, ", "))
	}
	peer := Peer{User: u.Username}
	if n := u.Extra[nodeNameExtra]; len(n) == 1 && n[0] != "" {
		peer.Node = n[0]
		return peer, nil
	}
	pods := u.Extra[podNameExtra]
	if len(pods) != 1 || pods[0] == "" {
		return Peer{}, fmt.Errorf("the token of %s is not bound to a pod: collectors must send their pod's projected token of audience %s", u.Username, accessv1.Audience)
	}
	ns := strings.TrimPrefix(u.Username, "system:serviceaccount:")
	ns, _, _ = strings.Cut(ns, ":")
	var pod corev1.Pod
	if err := a.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: pods[0]}, &pod); err != nil {
		return Peer{}, &reviewUnavailable{fmt.Errorf("read the collector's pod %s/%s: %w", ns, pods[0], err)}
	}
	if pod.Spec.NodeName == "" {
		return Peer{}, fmt.Errorf("the collector's pod %s/%s is on no node", ns, pods[0])
	}
	peer.Node = pod.Spec.NodeName
	return peer, nil
}

// Reasons a record is not admitted.
const (
	RejectOtherNode      = "other_node"
	RejectNoPod          = "unknown_pod"
	RejectNamespace      = "namespace_not_opted_in"
	RejectExcluded       = "excluded_namespace"
	RejectMalformed      = "malformed"
	RejectQuarantined    = "quarantined_key"
	RejectTooManyKeys    = "too_many_keys"
	RejectOverRate       = "rate_limited"
	RejectLookupFailures = "lookup_failed"
)

// PodAdmission admits records of pods that run on the collector's node, in
// namespaces labelled eddy.io/autotune=enabled other than Excluded. Pods and
// namespaces are read from Reader (an informer cache), and a pod the cache
// does not have yet from Live; a pod deleted in the last RememberDeleted is
// still known (a short Job's pod may be gone before its last window comes).
type PodAdmission struct {
	Reader client.Reader
	Live   client.Reader
	// Excluded namespaces are never admitted (kube-system, eddy's own).
	Excluded []string
	// Now is the clock (default time.Now).
	Now func() time.Time

	mu      sync.Mutex
	deleted map[string]deletedPod
}

type deletedPod struct {
	node, namespace string
	at              time.Time
}

// RememberDeleted is how long a deleted pod's node is remembered.
const RememberDeleted = 10 * time.Minute

// PodDeleted remembers a deleted pod's node (wire it to the pod informer's
// delete events).
func (p *PodAdmission) PodDeleted(pod *corev1.Pod) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deleted == nil {
		p.deleted = map[string]deletedPod{}
	}
	for uid, d := range p.deleted {
		if now.Sub(d.at) > RememberDeleted {
			delete(p.deleted, uid)
		}
	}
	p.deleted[string(pod.UID)] = deletedPod{node: pod.Spec.NodeName, namespace: pod.Namespace, at: now}
}

func (p *PodAdmission) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Admit implements Admission.
func (p *PodAdmission) Admit(ctx context.Context, peer Peer, rec *accessv1.FileAccess) string {
	w := rec.GetWorkload()
	ns := w.GetNamespace()
	if ns == "" || rec.GetPod() == "" || rec.GetPodUid() == "" || len(rec.GetPath()) > accessv1.MaxPathBytes ||
		len(rec.GetReadRanges()) > accessv1.MaxReadRanges ||
		(rec.GetDataset() != nil && rec.GetDataset().GetNamespace() != ns) {
		return RejectMalformed
	}
	for _, x := range p.Excluded {
		if ns == x {
			return RejectExcluded
		}
	}
	var nsObj corev1.Namespace
	if err := p.Reader.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		if apierrors.IsNotFound(err) {
			return RejectNamespace
		}
		return RejectLookupFailures
	}
	if nsObj.Labels[v1.AutotuneLabel] != v1.AutotuneEnabled {
		return RejectNamespace
	}
	node, found, err := p.nodeOf(ctx, ns, rec.GetPod(), rec.GetPodUid())
	switch {
	case err != nil:
		return RejectLookupFailures
	case !found:
		return RejectNoPod
	case node != peer.Node:
		return RejectOtherNode
	}
	return ""
}

// nodeOf finds the node of the pod namespace/name with the given UID.
func (p *PodAdmission) nodeOf(ctx context.Context, ns, name, uid string) (string, bool, error) {
	p.mu.Lock()
	d, ok := p.deleted[uid]
	p.mu.Unlock()
	if ok && d.namespace == ns {
		return d.node, true, nil
	}
	for _, r := range []client.Reader{p.Reader, p.Live} {
		if r == nil {
			continue
		}
		var pod corev1.Pod
		err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &pod)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return "", false, err
		}
		if string(pod.UID) == uid {
			return pod.Spec.NodeName, true, nil
		}
	}
	return "", false, nil
}
