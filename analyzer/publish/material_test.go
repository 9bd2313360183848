package publish

import (
	"testing"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// What an assessment without new reads changes (decay, the idle time in a
// decision's wording) is not worth a write; what a reader of the profile
// acts on is.
func TestMaterialChange(t *testing.T) {
	written := v1.AccessProfileStatus{
		Class: v1.ClassSequentialScan, Confidence: 0.8, Windows: 7,
		Features:   &v1.AccessFeatures{BytesRead: 1_000_000},
		Decisions:  []v1.Decision{{Rule: "Idle: idleSeconds 2.52 < 600", Feature: "idleSeconds", Value: 2.52, Threshold: 600}},
		Conditions: []metav1.Condition{{Type: v1.ConditionClassified, Status: metav1.ConditionTrue, Reason: "SequentialScan", Message: "read front to back"}},
	}
	for _, tc := range []struct {
		name     string
		change   func(*v1.AccessProfileStatus)
		material bool
	}{
		{"nothing", func(*v1.AccessProfileStatus) {}, false},
		{"decay by 1%", func(s *v1.AccessProfileStatus) { s.Features.BytesRead = 990_000 }, false},
		{"a decision's value and wording", func(s *v1.AccessProfileStatus) {
			s.Decisions[0].Value, s.Decisions[0].Rule = 12.5, "Idle: idleSeconds 12.50 < 600"
		}, false},
		{"a condition's message", func(s *v1.AccessProfileStatus) { s.Conditions[0].Message = "still front to back" }, false},
		{"a checkpoint", func(s *v1.AccessProfileStatus) { s.Checkpoint = &v1.Checkpoint{Version: 1, Data: []byte("x")} }, false},
		{"decay by 10%", func(s *v1.AccessProfileStatus) { s.Features.BytesRead = 900_000 }, true},
		{"a decision's outcome", func(s *v1.AccessProfileStatus) { s.Decisions[0].Held = true }, true},
		{"the class", func(s *v1.AccessProfileStatus) { s.Class = v1.ClassHotSet }, true},
		{"a new window", func(s *v1.AccessProfileStatus) { s.Windows = 8 }, true},
		{"a run", func(s *v1.AccessProfileStatus) { s.RecentRuns = []v1.RunSummary{{Pod: "p"}} }, true},
	} {
		now := written.DeepCopy()
		tc.change(now)
		assert.Equal(t, tc.material, materialChange(&written, now), tc.name)
	}
}
