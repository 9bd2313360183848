package history

import (
	"math"
	"math/bits"
)

// Sampler estimates a reuse-distance histogram in bytes from a stream of
// chunk references, SHARDS-style: only references whose key is at or below
// Threshold are followed, each standing for 1/rate references, and distances
// are scaled by 1/rate. The followed set is capped; past the cap the largest
// key is dropped and Threshold lowered below it (the fixed-size variant).
type Sampler struct {
	Threshold uint64 `json:"threshold"`
	// Items are the followed chunks, most recently referenced first.
	Items []Item `json:"items"`
	// Distance[i] counts references whose reuse distance d (bytes of
	// distinct data referenced since) has bits.Len64(d) == i (weighted).
	Distance [DistanceBuckets]float64 `json:"distance"`
	// Cold counts first references (weighted); Refs counts all (weighted).
	Cold float64 `json:"cold"`
	Refs float64 `json:"refs"`
}

// Item is one followed chunk.
type Item struct {
	Key  uint64 `json:"k"`
	Size int64  `json:"s"`
}

// Rate is the share of references the sampler follows.
func (s *Sampler) Rate() float64 { return rate(s.Threshold) }

func (s *Sampler) scale(f float64) {
	for i := range s.Distance {
		s.Distance[i] *= f
	}
	s.Cold *= f
	s.Refs *= f
}

// Access records a reference to chunk key of size bytes with weight w,
// keeping at most maxItems chunks. Keys above Threshold are ignored.
func (s *Sampler) Access(key uint64, size int64, w float64, maxItems int) {
	if key > s.Threshold {
		return
	}
	r := s.Rate()
	var dist int64
	i := 0
	for ; i < len(s.Items); i++ {
		if s.Items[i].Key == key {
			break
		}
		dist += s.Items[i].Size
	}
	s.Refs += w / r
	if i < len(s.Items) {
		d := float64(dist) / r
		s.Distance[distanceBucket(d)] += w / r
		copy(s.Items[1:i+1], s.Items[:i])
		s.Items[0] = Item{Key: key, Size: size}
		return
	}
	s.Cold += w / r
	if len(s.Items) < maxItems {
		s.Items = insertBounded(s.Items, 0, Item{Key: key, Size: size}, maxItems)
		return
	}
	// Full: the largest key goes — this one or one followed — and the
	// threshold drops below it, without growing the set past maxItems.
	big := s.largest()
	if key > s.Items[big].Key {
		s.Threshold = below(key)
		return
	}
	s.Threshold = below(s.Items[big].Key)
	copy(s.Items[1:big+1], s.Items[:big])
	s.Items[0] = Item{Key: key, Size: size}
}

// largest is the index of the followed chunk with the largest key.
func (s *Sampler) largest() int {
	big := 0
	for j := range s.Items {
		if s.Items[j].Key > s.Items[big].Key {
			big = j
		}
	}
	return big
}

// dropLargest stops following the chunk with the largest key and lowers
// Threshold below it.
func (s *Sampler) dropLargest() {
	big := s.largest()
	s.Threshold = below(s.Items[big].Key)
	s.Items = append(s.Items[:big], s.Items[big+1:]...)
}

// Repeat records n re-references of chunk key at an estimated reuse distance
// of dist bytes (re-reads within a window, which the LRU stack cannot see).
// The stack itself is not changed.
func (s *Sampler) Repeat(key uint64, n, dist, w float64) {
	if key > s.Threshold || n <= 0 {
		return
	}
	r := s.Rate()
	s.Refs += n * w / r
	s.Distance[distanceBucket(dist)] += n * w / r
}

func distanceBucket(d float64) int {
	if d >= math.MaxInt64 {
		return DistanceBuckets - 1
	}
	return min(bits.Len64(uint64(d)), DistanceBuckets-1)
}

// BucketBounds returns the byte range [lo, hi) of reuse-distance bucket i.
func BucketBounds(i int) (lo, hi float64) {
	if i == 0 {
		return 0, 1
	}
	return math.Ldexp(1, i-1), math.Ldexp(1, i)
}

// MissRatio is the estimated LRU miss ratio of a cache of cacheBytes: the
// share of references that are first references or whose reuse distance is
// at least cacheBytes (linear within a bucket). It is 1 with no references.
func (s *Sampler) MissRatio(cacheBytes float64) float64 {
	if s.Refs <= 0 {
		return 1
	}
	miss := s.Cold
	for i, c := range s.Distance {
		if c == 0 {
			continue
		}
		lo, hi := BucketBounds(i)
		switch {
		case cacheBytes <= lo:
			miss += c
		case cacheBytes < hi:
			miss += c * (hi - cacheBytes) / (hi - lo)
		}
	}
	return min(miss/s.Refs, 1)
}

// Floor is the infinite cache's miss ratio: first references only.
func (s *Sampler) Floor() float64 {
	if s.Refs <= 0 {
		return 1
	}
	return s.Cold / s.Refs
}

// Reach is the smallest cache (bytes) whose miss ratio is within slack of
// the infinite cache's (Floor). It is 0 when nothing was referenced twice.
func (s *Sampler) Reach(slack float64) float64 {
	if s.Refs <= 0 {
		return 0
	}
	allowed := slack * s.Refs
	var tail float64
	for i := len(s.Distance) - 1; i >= 0; i-- {
		c := s.Distance[i]
		if tail+c > allowed {
			lo, hi := BucketBounds(i)
			// Within the bucket, a cache of x misses c*(hi-x)/(hi-lo).
			return hi - (allowed-tail)/c*(hi-lo)
		}
		tail += c
	}
	return 0
}

// Knee finds the knee of the miss-ratio curve the Kneedle way: the cache
// size, up to Reach(0), where the curve lies furthest below the chord from
// (0, 1) to (Reach(0), Floor()). The curve is linear between powers of two,
// so the knee is one of them. It returns the knee and that distance (0 when
// the curve has no reuse).
func (s *Sampler) Knee() (cacheBytes, gain float64) {
	top := s.Reach(0)
	if top <= 0 {
		return 0, 0
	}
	floor := s.Floor()
	best, bestGain := top, 0.0
	for c := 1.0; c < top; c *= 2 {
		chord := 1 - (1-floor)*c/top
		if g := chord - s.MissRatio(c); g > bestGain {
			best, bestGain = c, g
		}
	}
	return best, bestGain
}
