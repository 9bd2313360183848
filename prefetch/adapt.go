package prefetch

import (
	"slices"
	"time"
)

// Tuning of the concurrency controller.
const (
	// latencyTolerance is how far a round's mean read latency may rise above
	// the base latency before it counts as queueing. Reads beyond the
	// bandwidth-delay product only queue, so some queueing costs nothing,
	// while backing off below that product costs throughput: the tolerance
	// errs on the side of a little queueing.
	latencyTolerance = 2.0
	// throughputGain is the relative throughput increase that counts as
	// "still rising".
	throughputGain = 1.05
	// decreaseFactor is the multiplicative back-off.
	decreaseFactor = 0.75
	// baseDriftPerSecond lets the base latency creep up by this share per
	// second, so a lasting change in the remote (larger files, a slower
	// link) is learnt without mistaking queueing for the new normal.
	baseDriftPerSecond = 0.02
	// minRound is the shortest measuring round.
	minRound = 20 * time.Millisecond
)

// adaptive decides how many reads may be in flight, AIMD-style, in rounds
// of about one read latency each: the limit grows while throughput rises or
// latency stays near its base -- doubling per round at first (slow start,
// as in TCP), by one per round after the first back-off -- and is cut by a
// quarter when, two rounds in a row, the median latency rises (reads queue
// somewhere) without a throughput gain.
// It is not safe for concurrent use; the prefetcher calls it under its lock.
type adaptive struct {
	limit, min, max int
	slowStart       bool
	// settle skips the decision of the round after a decrease: its reads
	// were issued under the old limit, so its latency still shows the
	// queueing that the decrease is meant to cure.
	settle bool
	// congested counts consecutive rounds that looked like queueing; one
	// round is not enough to back off, since a single slow round is more
	// often noise (a busy CPU, one slow file) than a full link.
	congested int

	base    time.Duration // lowest round median latency seen, drifting up
	prevThr float64       // smoothed throughput of previous rounds, bytes/s

	roundStart time.Time
	bytes      int64
	lats       []time.Duration
}

func newAdaptive(start, minLimit, maxLimit int, now time.Time) *adaptive {
	return &adaptive{limit: min(max(start, minLimit), maxLimit), min: minLimit, max: maxLimit, roundStart: now, slowStart: true}
}

// observe records one finished read of n bytes that took lat.
func (a *adaptive) observe(n int64, lat time.Duration) {
	a.bytes += n
	a.lats = append(a.lats, lat)
}

// tick ends the round if enough reads were seen, adjusts the limit, and
// returns it.
func (a *adaptive) tick(now time.Time) int {
	elapsed := now.Sub(a.roundStart)
	if len(a.lats) < max(a.limit, 2) || elapsed < minRound {
		return a.limit
	}
	thr := float64(a.bytes) / elapsed.Seconds()
	slices.Sort(a.lats)
	lat := a.lats[len(a.lats)/2] // the median shrugs off a few outliers
	a.roundStart, a.bytes, a.lats = now, 0, a.lats[:0]

	if a.base == 0 || lat < a.base {
		a.base = lat
	} else {
		a.base = time.Duration(float64(a.base) * (1 + baseDriftPerSecond*elapsed.Seconds()))
	}
	queueing := float64(lat) > float64(a.base)*latencyTolerance
	rising := a.prevThr == 0 || thr > a.prevThr*throughputGain
	if queueing && !rising {
		a.congested++
	} else {
		a.congested = 0
	}
	switch {
	case a.settle:
		a.settle, a.congested = false, 0
	case a.congested >= 2:
		a.limit = max(a.min, int(float64(a.limit)*decreaseFactor))
		a.slowStart = false
		a.settle = true
		a.congested = 0
	case queueing:
		// Hold: latency is up, but throughput still rose, or the link has
		// looked congested for one round only.
	case a.slowStart:
		a.limit = min(a.max, 2*a.limit)
	default:
		a.limit = min(a.max, a.limit+1)
	}
	if a.prevThr == 0 {
		a.prevThr = thr
	} else {
		a.prevThr = 0.5*a.prevThr + 0.5*thr
	}
	return a.limit
}
