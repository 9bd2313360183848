package operator

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// setCondition sets a condition on rec and says whether anything changed.
func setCondition(rec *eddyv1alpha1.Recommendation, typ string, status metav1.ConditionStatus, reason, msg string) bool {
	return meta.SetStatusCondition(&rec.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: rec.Generation,
	})
}

// recorder emits events regarding an object; a nil events.EventRecorder
// records nothing.
type recorder struct{ events.EventRecorder }

func (r recorder) normal(obj client.Object, reason, action, note string, args ...any) {
	countAction(obj, corev1.EventTypeNormal, reason, action)
	if r.EventRecorder != nil {
		r.Eventf(obj, nil, corev1.EventTypeNormal, reason, action, note, args...)
	}
}

func (r recorder) warning(obj client.Object, reason, action, note string, args ...any) {
	countAction(obj, corev1.EventTypeWarning, reason, action)
	if r.EventRecorder != nil {
		r.Eventf(obj, nil, corev1.EventTypeWarning, reason, action, note, args...)
	}
}
