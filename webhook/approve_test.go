package webhook

import (
	"testing"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDecisionChanged(t *testing.T) {
	approved := metav1.Condition{Type: "Approved", Status: metav1.ConditionTrue, Reason: "Reviewed", Message: "ok"}
	applied := metav1.Condition{Type: "Applied", Status: metav1.ConditionTrue, Reason: "Injected"}
	later := approved
	later.LastTransitionTime = metav1.Now()
	reworded := approved
	reworded.Message = "fine"
	for _, tc := range []struct {
		name     string
		old, cur []metav1.Condition
		want     bool
	}{
		{"nothing", nil, nil, false},
		{"operator adds Applied", nil, []metav1.Condition{applied}, false},
		{"Approved added", nil, []metav1.Condition{approved}, true},
		{"Approved removed", []metav1.Condition{approved}, nil, true},
		{"Approved reworded", []metav1.Condition{approved}, []metav1.Condition{reworded}, true},
		{"only the transition time differs", []metav1.Condition{approved}, []metav1.Condition{later, applied}, false},
		{"Denied added", []metav1.Condition{applied}, []metav1.Condition{applied, {Type: "Denied", Status: metav1.ConditionTrue}}, true},
	} {
		assert.Equal(t, tc.want, decisionChanged(tc.old, tc.cur), tc.name)
	}
}
