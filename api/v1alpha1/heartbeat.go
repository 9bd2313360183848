package v1alpha1

import "time"

// AnalyzerHeartbeatLease is the name of the Lease (coordination.k8s.io) the
// analyzer renews while it makes progress; the operator acts only while it
// is fresh.
const AnalyzerHeartbeatLease = "eddy-analyzer"

// AnalyzerStaleAfter is how old the heartbeat Lease's renewTime may be
// before the operator stops acting (its default). The analyzer renews the
// Lease at least four times within it while it is making progress, however
// long a flush takes, and stops renewing within half of it once it makes
// none: a live analyzer never looks stale, and a stuck one does in time.
const AnalyzerStaleAfter = 2 * time.Minute
