package operator

import (
	"context"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// heartbeat reads the analyzer's heartbeat Lease. The operator acts only
// while it is fresh: a dead analyzer stops updating profiles, and decisions
// made from stale profiles (a dataset that looks unread, a change that looks
// ineffective) would be wrong.
type heartbeat struct {
	reader     client.Reader
	namespace  string
	name       string
	staleAfter time.Duration
	now        func() time.Time
}

func newHeartbeat(c client.Reader, o Options) *heartbeat {
	return &heartbeat{reader: c, namespace: o.Namespace, name: o.AnalyzerLease, staleAfter: o.AnalyzerStaleAfter, now: o.Now}
}

// check returns nil when the Lease was renewed within staleAfter, else an
// error saying how stale it is.
func (h *heartbeat) check(ctx context.Context) error {
	var lease coordinationv1.Lease
	err := h.reader.Get(ctx, client.ObjectKey{Namespace: h.namespace, Name: h.name}, &lease)
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("analyzer heartbeat Lease %s/%s does not exist: no action until the analyzer runs", h.namespace, h.name)
	}
	if err != nil {
		return fmt.Errorf("read analyzer heartbeat Lease %s/%s: %w", h.namespace, h.name, err)
	}
	if lease.Spec.RenewTime == nil {
		return fmt.Errorf("analyzer heartbeat Lease %s/%s was never renewed: no action until the analyzer runs", h.namespace, h.name)
	}
	age := h.now().Sub(lease.Spec.RenewTime.Time)
	if age > h.staleAfter {
		return fmt.Errorf("analyzer heartbeat Lease %s/%s was last renewed %s ago (stale after %s): no action until it is renewed",
			h.namespace, h.name, age.Round(time.Second), h.staleAfter)
	}
	return nil
}
