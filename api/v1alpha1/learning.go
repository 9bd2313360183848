package v1alpha1

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultRefreshAfter is how long a confident profile rests before its
// workload's runs are observed again, when the policy does not say
// (AutotunePolicySpec.RefreshAfter).
const DefaultRefreshAfter = 12 * time.Hour

// Learning reports whether the runs of the profile's workload that start at
// now are to be observed. Only a profile whose Learning condition is False
// rests, and only until its status.nextRefresh (without one it does
// not rest): a profile without the
// condition (new, or written by an older analyzer) or with it True or
// Unknown learns. The analyzer sets the condition; the collector asks this
// function, so the two never disagree on what a condition means.
func Learning(p *AccessProfile, now time.Time) bool {
	c := meta.FindStatusCondition(p.Status.Conditions, ConditionLearning)
	if c == nil || c.Status != metav1.ConditionFalse {
		return true
	}
	next := p.Status.NextRefresh
	return next == nil || !now.Before(next.Time)
}
