package v1alpha1

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestLearning(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	cond := func(s metav1.ConditionStatus, reason string) []metav1.Condition {
		return []metav1.Condition{{Type: ConditionLearning, Status: s, Reason: reason}}
	}
	at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(d)); return &t }
	for _, c := range []struct {
		name string
		st   AccessProfileStatus
		want bool
	}{
		{"no condition: unknown, observe", AccessProfileStatus{}, true},
		{"not confident", AccessProfileStatus{Conditions: cond(metav1.ConditionTrue, ReasonNotConfident)}, true},
		{"verifying", AccessProfileStatus{Conditions: cond(metav1.ConditionTrue, ReasonVerifying)}, true},
		{"unknown status", AccessProfileStatus{Conditions: cond(metav1.ConditionUnknown, "Whatever")}, true},
		{"resting until later", AccessProfileStatus{Conditions: cond(metav1.ConditionFalse, ReasonResting), NextRefresh: at(time.Hour)}, false},
		{"resting, refresh due", AccessProfileStatus{Conditions: cond(metav1.ConditionFalse, ReasonResting), NextRefresh: at(-time.Second)}, true},
		{"resting, refresh due now", AccessProfileStatus{Conditions: cond(metav1.ConditionFalse, ReasonResting), NextRefresh: at(0)}, true},
		{"resting without a refresh time", AccessProfileStatus{Conditions: cond(metav1.ConditionFalse, ReasonResting)}, true},
	} {
		if got := Learning(&AccessProfile{Status: c.st}, now); got != c.want {
			t.Errorf("%s: Learning = %v, want %v", c.name, got, c.want)
		}
	}
}
