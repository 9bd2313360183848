package intake

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

// A record with more read ranges than a collector sends is refused before
// anything is looked up (Reader is nil: reaching it would panic).
func TestTooManyReadRangesAreMalformed(t *testing.T) {
	rec := &accessv1.FileAccess{
		Workload: &accessv1.WorkloadRef{Namespace: "ml", Kind: "Job", Name: "train"},
		Pod:      "train-1", PodUid: "uid-1",
		ReadRanges: make([]*accessv1.ReadRange, accessv1.MaxReadRanges+1),
	}
	assert.Equal(t, RejectMalformed, (&PodAdmission{}).Admit(context.Background(), Peer{}, rec))
}
