package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// brokenReader fails every read, standing in for an API server or cache
// outage: a real one cannot be made to fail on cue mid-request.
type brokenReader struct{}

func (brokenReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return errors.New("cache unavailable")
}

func (brokenReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("cache unavailable")
}

func podRequest(t *testing.T, raw []byte) admission.Request {
	t.Helper()
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "1", Operation: admissionv1.Create, Namespace: "ml",
		Kind:   metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Object: runtime.RawExtension{Raw: raw},
	}}
}

// TestInjectorFailsOpen: an internal error admits the pod unchanged, with a
// warning for its creator, an event and eddy_webhook_errors_total.
func TestInjectorFailsOpen(t *testing.T) {
	pod := testPod("ml", "web-", "web", "imagenet")
	raw, err := json.Marshal(pod)
	require.NoError(t, err)
	for _, tc := range []struct {
		name, stage string
		raw         []byte
	}{
		{"lookup error", "lookup", raw},
		{"undecodable pod", "decode", []byte(`{"spec": 42}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events := record.NewFakeRecorder(10)
			m := NewMetrics(prometheus.NewRegistry())
			h := &Injector{Reader: brokenReader{}, Config: goldenConfig(true), Recorder: events, Metrics: m, Log: logr.Discard()}
			resp := h.Handle(context.Background(), podRequest(t, tc.raw))
			assert.True(t, resp.Allowed, "fail open")
			assert.Empty(t, resp.Patches, "pod unchanged")
			require.Len(t, resp.Warnings, 1)
			assert.Contains(t, resp.Warnings[0], "admitted without injection")
			assert.Equal(t, 1.0, testutil.ToFloat64(m.Errors.WithLabelValues("inject", tc.stage)))
			require.Len(t, events.Events, 1)
			ev := <-events.Events
			assert.True(t, strings.HasPrefix(ev, "Warning "+EventInjectionFailed), ev)
		})
	}
}
