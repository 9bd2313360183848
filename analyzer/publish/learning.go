package publish

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// learnInputs are what a profile's Learning condition is decided from,
// beside its status: the namespace's policy, how long an unended run must
// have been read to count as whole, and whether a recommendation made from
// the profile awaits verification (asked only when the answer matters: it
// lists the namespace's recommendations once per Publish call).
type learnInputs struct {
	pol          policyBounds
	longRunAfter time.Duration
	verifying    func() (bool, error)
}

// learning decides a profile's Learning condition and status.nextRefresh
// from its new status (class, confidence, runs, the condition and
// nextRefresh it had) at now:
//
//   - True while it is not confident: no run seen whole (v1.RunSeenWhole),
//     or its class unknown or below the policy's minConfidence;
//   - True while a recommendation made from it is Applied and awaits the
//     runs it is verified on;
//   - True, Refreshing, once a rest reached its nextRefresh and runs were
//     observed again, until one that started after nextRefresh is seen whole;
//   - True always when the policy's refreshAfter is 0;
//   - else False, Resting, until now + refreshAfter (a rest in progress
//     keeps its nextRefresh: the windows of pods observed since before it
//     began do not extend it).
func learning(st *v1.AccessProfileStatus, in learnInputs, now time.Time) (metav1.Condition, *metav1.Time, error) {
	learn := func(reason, msg string) (metav1.Condition, *metav1.Time, error) {
		return metav1.Condition{Type: v1.ConditionLearning, Status: metav1.ConditionTrue, Reason: reason, Message: msg}, nil, nil
	}
	switch {
	case in.pol.refreshAfter <= 0:
		return learn(v1.ReasonNeverRests, "the namespace's AutotunePolicy has refreshAfter 0: every run is observed")
	case !known(st.Class):
		return learn(v1.ReasonNotConfident, "no access pattern recognised yet")
	case st.Confidence < in.pol.minConfidence:
		return learn(v1.ReasonNotConfident, fmt.Sprintf("confidence %.2f in %s is below the policy's minConfidence %.2f", st.Confidence, st.Class, in.pol.minConfidence))
	case !runsWhole(st, st.RecentRuns, in.longRunAfter):
		return learn(v1.ReasonNotConfident, fmt.Sprintf("no run has ended or been read for %s yet", in.longRunAfter))
	}
	if in.verifying != nil {
		v, err := in.verifying()
		if err != nil {
			return metav1.Condition{}, nil, err
		}
		if v {
			return learn(v1.ReasonVerifying, "a recommendation made from this profile is applied: the runs after it are observed to verify it")
		}
	}
	prev := meta.FindStatusCondition(st.Conditions, v1.ConditionLearning)
	next := st.NextRefresh
	if prev != nil && next != nil {
		refreshing := func() (metav1.Condition, *metav1.Time, error) {
			return metav1.Condition{Type: v1.ConditionLearning, Status: metav1.ConditionTrue, Reason: v1.ReasonRefreshing,
				Message: fmt.Sprintf("rested until %s: runs are observed until one that started since has been seen whole", next.UTC().Format(time.RFC3339))}, next, nil
		}
		switch {
		case prev.Status == metav1.ConditionFalse && prev.Reason == v1.ReasonResting:
			if now.Before(next.Time) {
				return *prev, next, nil
			}
			return refreshing()
		case prev.Status == metav1.ConditionTrue && prev.Reason == v1.ReasonRefreshing:
			var since []v1.RunSummary
			for _, r := range st.RecentRuns {
				if !r.Start.Before(next) {
					since = append(since, r)
				}
			}
			if !runsWhole(st, since, in.longRunAfter) {
				return refreshing()
			}
		}
	}
	until := metav1.NewTime(now.Add(in.pol.refreshAfter).Truncate(time.Second))
	return metav1.Condition{Type: v1.ConditionLearning, Status: metav1.ConditionFalse, Reason: v1.ReasonResting,
		Message: fmt.Sprintf("%s with confidence %.2f from a whole run: runs that start before %s are not observed (not observed is unknown, never idle)",
			st.Class, st.Confidence, until.UTC().Format(time.RFC3339))}, &until, nil
}

// runsWhole reports whether runs let the profile be judged
// (v1.RunSeenWhole). A WriteMostly profile has no runs — runs are made of
// reads — and nothing more to learn once classified: without this, the
// profile of a workload's output volume would keep the workload learning
// for ever.
func runsWhole(st *v1.AccessProfileStatus, runs []v1.RunSummary, longRunAfter time.Duration) bool {
	if st.Class == v1.ClassWriteMostly && len(st.RecentRuns) == 0 {
		return true
	}
	return v1.RunSeenWhole(runs, longRunAfter)
}

// awaitsVerification reports whether one of a profile's recommendations is
// Applied: the runs after it are what it is verified on.
func awaitsVerification(recs []v1.Recommendation) bool {
	for i := range recs {
		if recs[i].Status.Phase == v1.PhaseApplied {
			return true
		}
	}
	return false
}
