package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// statusError is the HTTP status reported when the request itself cannot be
// understood.
const statusError = http.StatusBadRequest

// ApproveVerb is the RBAC verb on recommendations.eddy.io that lets a user
// set a recommendation's Approved or Denied condition.
const ApproveVerb = "approve"

// ApprovalValidator is the validating webhook on recommendations/status:
// a change to the Approved or Denied condition is allowed only when a
// SubjectAccessReview says the requesting user may approve that
// recommendation. Approving one that eddy did not propose (see
// v1alpha1.ManagedByLabel) also needs the right to make the change
// directly: to create pods in the namespace for Prefetch and InjectSDK, to
// update the named cache target's scale subresource for ScaleCache — so
// nobody gets eddy to do what they may not. A decision, once True, is
// final, and a recommendation is never both Approved and Denied. Every
// other status change passes.
type ApprovalValidator struct {
	// Client creates SubjectAccessReviews.
	Client client.Client
	// Mapper maps a cache target's kind to its resource.
	Mapper meta.RESTMapper
	// Metrics are updated for every request; nil updates none.
	Metrics *Metrics
	// Log receives one line per decision checked.
	Log logr.Logger
}

var _ admission.Handler = (*ApprovalValidator)(nil)

// Handle answers one admission request.
func (v *ApprovalValidator) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	if m := v.Metrics; m != nil {
		m.Requests.WithLabelValues("approve").Inc()
		defer func() { m.Duration.WithLabelValues("approve").Observe(time.Since(start).Seconds()) }()
	}
	var rec, old eddyv1alpha1.Recommendation
	if err := json.Unmarshal(req.Object.Raw, &rec); err != nil {
		v.countError("decode")
		return admission.Errored(statusError, fmt.Errorf("decode recommendation %s/%s: %w", req.Namespace, req.Name, err))
	}
	if len(req.OldObject.Raw) > 0 {
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			v.countError("decode")
			return admission.Errored(statusError, fmt.Errorf("decode old recommendation %s/%s: %w", req.Namespace, req.Name, err))
		}
	}
	if !decisionChanged(old.Status.Conditions, rec.Status.Conditions) {
		return admission.Allowed("")
	}
	if isTrue(rec.Status.Conditions, eddyv1alpha1.ConditionApproved) && isTrue(rec.Status.Conditions, eddyv1alpha1.ConditionDenied) {
		return v.deny("a recommendation cannot be both Approved and Denied: set one of the two conditions")
	}
	for _, t := range []string{eddyv1alpha1.ConditionApproved, eddyv1alpha1.ConditionDenied} {
		if isTrue(old.Status.Conditions, t) && !sameDecision(meta.FindStatusCondition(old.Status.Conditions, t), meta.FindStatusCondition(rec.Status.Conditions, t)) {
			return v.deny(fmt.Sprintf("recommendation %s/%s is already %s; the decision is final (create a new recommendation instead)", req.Namespace, req.Name, t))
		}
	}
	u := req.UserInfo
	allowed, err := v.allowed(ctx, u, &authorizationv1.ResourceAttributes{
		Group: eddyv1alpha1.GroupVersion.Group, Resource: "recommendations", Verb: ApproveVerb,
		Namespace: req.Namespace, Name: req.Name,
	})
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("check whether %s may approve recommendation %s/%s: %w", u.Username, req.Namespace, req.Name, err))
	}
	if !allowed {
		return v.deny(fmt.Sprintf("user %q may not approve or deny recommendation %s/%s: that needs the verb %q on recommendations.eddy.io (bind the ClusterRole eddy-recommendation-approver)",
			u.Username, req.Namespace, req.Name, ApproveVerb))
	}
	if isTrue(rec.Status.Conditions, eddyv1alpha1.ConditionApproved) && !rec.ProposedByEddy() {
		change, what, err := v.changeOf(&rec)
		if err != nil {
			return v.deny(fmt.Sprintf("recommendation %s/%s was not proposed by eddy: %v", req.Namespace, req.Name, err))
		}
		ok, err := v.allowed(ctx, u, change)
		if err != nil {
			return admission.Errored(http.StatusInternalServerError, fmt.Errorf("check whether %s may %s: %w", u.Username, what, err))
		}
		if !ok {
			return v.deny(fmt.Sprintf("recommendation %s/%s was not proposed by eddy, and user %q may not %s directly: eddy acts on it only with the approval of someone who could",
				req.Namespace, req.Name, u.Username, what))
		}
	}
	if v.Metrics != nil {
		v.Metrics.Approvals.WithLabelValues("allowed").Inc()
	}
	v.Log.Info("approval decision allowed", "user", u.Username, "namespace", req.Namespace, "name", req.Name)
	return admission.Allowed("")
}

// allowed asks the API server whether u may do what attrs say.
func (v *ApprovalValidator) allowed(ctx context.Context, u authenticationv1.UserInfo, attrs *authorizationv1.ResourceAttributes) (bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: u.Username, Groups: u.Groups, UID: u.UID, ResourceAttributes: attrs,
	}}
	if len(u.Extra) > 0 {
		sar.Spec.Extra = map[string]authorizationv1.ExtraValue{}
		for k, val := range u.Extra {
			sar.Spec.Extra[k] = authorizationv1.ExtraValue(val)
		}
	}
	if err := v.Client.Create(ctx, sar); err != nil {
		v.countError("subjectaccessreview")
		v.Log.Error(err, "subject access review failed", "user", u.Username, "attributes", attrs)
		return false, err
	}
	return sar.Status.Allowed, nil
}

// changeOf is the access a person needs to make rec's change directly, and
// it in words.
func (v *ApprovalValidator) changeOf(rec *eddyv1alpha1.Recommendation) (*authorizationv1.ResourceAttributes, string, error) {
	ns := rec.Namespace
	switch rec.Spec.Action {
	case eddyv1alpha1.ActionPrefetch, eddyv1alpha1.ActionInjectSDK:
		return &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "pods"},
			fmt.Sprintf("create pods in %s (a pod that runs a prefetcher of its own)", ns), nil
	case eddyv1alpha1.ActionScaleCache:
		t := rec.Spec.ScaleCache
		if t == nil || t.CacheTargetRef == nil {
			return nil, "", fmt.Errorf("name the cache target (spec.scaleCache.cacheTargetRef), so that the approver's right to scale it can be checked")
		}
		gv, err := schema.ParseGroupVersion(t.CacheTargetRef.APIVersion)
		if err != nil {
			return nil, "", fmt.Errorf("cacheTargetRef apiVersion %q: %w", t.CacheTargetRef.APIVersion, err)
		}
		if v.Mapper == nil {
			return nil, "", fmt.Errorf("the webhook cannot map %s to a resource", t.CacheTargetRef.Kind)
		}
		m, err := v.Mapper.RESTMapping(gv.WithKind(t.CacheTargetRef.Kind).GroupKind(), gv.Version)
		if err != nil {
			return nil, "", fmt.Errorf("cacheTargetRef %s: %w", t.CacheTargetRef.Kind, err)
		}
		return &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "update", Group: gv.Group, Resource: m.Resource.Resource, Subresource: "scale", Name: t.CacheTargetRef.Name},
			fmt.Sprintf("scale %s/%s in %s", t.CacheTargetRef.Kind, t.CacheTargetRef.Name, ns), nil
	}
	return nil, "", fmt.Errorf("%s recommendations are eddy's own", rec.Spec.Action)
}

func (v *ApprovalValidator) deny(msg string) admission.Response {
	if v.Metrics != nil {
		v.Metrics.Approvals.WithLabelValues("denied").Inc()
	}
	v.Log.Info("approval decision denied", "reason", msg)
	return admission.Denied(msg)
}

func (v *ApprovalValidator) countError(stage string) {
	if v.Metrics != nil {
		v.Metrics.Errors.WithLabelValues("approve", stage).Inc()
	}
}

// decisionChanged reports whether the Approved or Denied condition was
// added, removed, or changed in status, reason or message.
func decisionChanged(old, cur []metav1.Condition) bool {
	for _, t := range []string{eddyv1alpha1.ConditionApproved, eddyv1alpha1.ConditionDenied} {
		if !sameDecision(meta.FindStatusCondition(old, t), meta.FindStatusCondition(cur, t)) {
			return true
		}
	}
	return false
}

func sameDecision(a, b *metav1.Condition) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message
}

func isTrue(conds []metav1.Condition, t string) bool {
	return meta.IsStatusConditionTrue(conds, t)
}
