// Package classify names a workload's access pattern from its features, with
// a confidence and the rules that decided it, as data.
//
// Classes are tried in a fixed precedence (Idle, WriteMostly, ShuffledEpochs,
// HotSet, SequentialScan, RandomReads); the first whose rules all pass wins,
// else Unknown. Each rule compares one feature with a named threshold.
//
// Confidence = strength × evidence, where
//
//   - strength is the weakest passing rule's 0.5 + 0.5·margin, margin being
//     |value − threshold| / scale clamped to [0,1] (scale is the rule's
//     "clearly past" distance), so a barely-passing rule halves confidence;
//   - evidence = (1 − e^(−bytes/EvidenceBytes)) · (1 − e^(−windows/EvidenceWindows)),
//     with bytes read (or written, for WriteMostly; for RandomReads, whichever
//     of bytes and reads/EvidenceRandomReads says more); for ShuffledEpochs it is
//     further multiplied by 1 − e^(−(epochs−1)), since a shuffle needs two
//     epochs to be seen at all; Idle uses the windows factor only.
//
// Unknown's confidence is the evidence: how sure we are that enough was seen
// for none of the patterns to fit.
package classify

import (
	"fmt"
	"math"
	"strings"

	"github.com/eddy-autotune/eddy/analyzer/features"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Thresholds of the rules. Ratios are in [0,1].
const (
	// MinSequentialRatio: a scan's reads mostly continue where the last ended.
	MinSequentialRatio = 0.8
	// MaxRandomSequentialRatio: random readers are at most this sequential.
	MaxRandomSequentialRatio = 0.5
	// MaxRandomReadBytes: random readers' median read is small.
	MaxRandomReadBytes = 256 << 10
	// MaxRandomWholeFileRatio: random readers rarely read files whole.
	MaxRandomWholeFileRatio = 0.5
	// MinShuffledEpochs: a shuffle shows only from the second epoch on.
	MinShuffledEpochs = 2
	// MinShuffledWholeFileRatio: shuffled datasets are read file by file.
	MinShuffledWholeFileRatio = 0.8
	// MinShuffledCoverage: each epoch reads (nearly) the whole dataset.
	MinShuffledCoverage = 0.7
	// MaxShuffledOrderCorrelation: a new order each epoch.
	MaxShuffledOrderCorrelation = 0.5
	// MaxShuffledHotSetShare: every epoch reads every file once, so the
	// densest 10% of bytes get about 10% of reads, far from a hot set.
	MaxShuffledHotSetShare = 0.3
	// MinStableOrderCorrelation: a scan repeated over epochs keeps its order.
	MinStableOrderCorrelation = 0.8
	// MinHotSetShare: the densest 10% of bytes get this share of reads.
	MinHotSetShare = 0.6
	// MinHotSetReuse: hot data is read again and again.
	MinHotSetReuse = 0.5
	// MinWriteShare: write bytes' share of all bytes moved.
	MinWriteShare = 0.8
	// DefaultIdleAfter is how long without reads makes a dataset Idle.
	DefaultIdleAfter = 600.0 // seconds
	// EvidenceBytes and EvidenceWindows scale the evidence factor: at these
	// amounts it is 1 − 1/e ≈ 0.63 each.
	EvidenceBytes   = 16 << 20
	EvidenceWindows = 1.0
	// EvidenceRandomReads scales the evidence of RandomReads by reads: small
	// reads at random offsets are each a sample of the pattern, yet few
	// bytes (400 reads of 4 KiB are 1.6 MiB, a tenth of EvidenceBytes), so
	// it counts reads or bytes, whichever says more.
	EvidenceRandomReads = 256.0
)

// Options adjust classification. The zero value means the defaults.
type Options struct {
	// IdleAfter in seconds; 0 means DefaultIdleAfter.
	IdleAfter float64
}

// Rule is one comparison that took part in a decision.
type Rule struct {
	Feature   string  `json:"feature"`
	Op        string  `json:"op"`
	Threshold float64 `json:"threshold"`
	Value     float64 `json:"value"`
	Passed    bool    `json:"passed"`
	// Skipped rules did not apply and count as passed; Why says why a rule
	// was skipped or could not be evaluated.
	Skipped bool    `json:"skipped,omitempty"`
	Why     string  `json:"why,omitempty"`
	Margin  float64 `json:"margin"`
}

// String renders the rule as "feature value op threshold".
func (r Rule) String() string {
	if r.Why != "" {
		return fmt.Sprintf("%s: %s", r.Feature, r.Why)
	}
	op := r.Op
	if !r.Passed {
		op = map[string]string{">=": "<", "<=": ">"}[r.Op]
	}
	return fmt.Sprintf("%s %s %s %s", r.Feature, fmtNum(r.Value), op, fmtNum(r.Threshold))
}

func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1<<20:
		return fmt.Sprintf("%.1fMiB", v/(1<<20))
	case a >= 1<<10 && a == math.Trunc(a):
		return fmt.Sprintf("%.0fKiB", v/(1<<10))
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// Candidate is one class's rules and whether they all passed.
type Candidate struct {
	Class  v1.AccessClass `json:"class"`
	Rules  []Rule         `json:"rules"`
	Passed bool           `json:"passed"`
}

// Decision is a classification and its explanation.
type Decision struct {
	Class      v1.AccessClass `json:"class"`
	Confidence float64        `json:"confidence"`
	// Strength and Evidence are the two factors of Confidence.
	Strength float64 `json:"strength"`
	Evidence float64 `json:"evidence"`
	// Candidates are the classes tried, in precedence order, up to and
	// including the winner.
	Candidates []Candidate `json:"candidates"`
	Reason     string      `json:"reason"`
}

// Rules returns the winning class's rules (nil for Unknown).
func (d *Decision) Rules() []Rule {
	for _, c := range d.Candidates {
		if c.Class == d.Class {
			return c.Rules
		}
	}
	return nil
}

type ruleSet struct {
	rules []Rule
}

func (s *ruleSet) atLeast(feature string, value, threshold, scale float64) {
	s.add(feature, ">=", value, threshold, scale, value >= threshold)
}

func (s *ruleSet) atMost(feature string, value, threshold, scale float64) {
	s.add(feature, "<=", value, threshold, scale, value <= threshold)
}

func (s *ruleSet) add(feature, op string, value, threshold, scale float64, passed bool) {
	m := math.Min(math.Abs(value-threshold)/scale, 1)
	if !passed {
		m = 0
	}
	s.rules = append(s.rules, Rule{Feature: feature, Op: op, Threshold: threshold, Value: value, Passed: passed, Margin: m})
}

func (s *ruleSet) skip(feature, why string) {
	s.rules = append(s.rules, Rule{Feature: feature, Passed: true, Skipped: true, Why: why, Margin: 1})
}

func (s *ruleSet) fail(feature, why string) {
	s.rules = append(s.rules, Rule{Feature: feature, Why: why})
}

func (s *ruleSet) passed() bool {
	for _, r := range s.rules {
		if !r.Passed {
			return false
		}
	}
	return true
}

func (s *ruleSet) strength() float64 {
	st := 1.0
	for _, r := range s.rules {
		st = math.Min(st, 0.5+0.5*r.Margin)
	}
	return st
}

func saturate(x, scale float64) float64 {
	if x <= 0 {
		return 0
	}
	return -math.Expm1(-x / scale)
}

// Classify decides the class of f.
func Classify(f *features.Features, opt Options) Decision {
	idleAfter := opt.IdleAfter
	if idleAfter <= 0 {
		idleAfter = DefaultIdleAfter
	}
	windowsEv := saturate(float64(f.Windows), EvidenceWindows)
	readEv := saturate(f.BytesRead, EvidenceBytes) * windowsEv
	var d Decision

	try := func(c v1.AccessClass, s *ruleSet, evidence float64) bool {
		ok := s.passed()
		d.Candidates = append(d.Candidates, Candidate{Class: c, Rules: s.rules, Passed: ok})
		if !ok {
			return false
		}
		d.Class = c
		d.Strength = s.strength()
		d.Evidence = evidence
		d.Confidence = d.Strength * d.Evidence
		return true
	}

	var idle ruleSet
	idle.atLeast("idleSeconds", f.IdleSeconds, idleAfter, idleAfter)
	if try(v1.ClassIdle, &idle, windowsEv) {
		return finish(d)
	}

	var wm ruleSet
	wm.atLeast("writeShare", f.WriteShare, MinWriteShare, 0.2)
	if try(v1.ClassWriteMostly, &wm, saturate(f.BytesWritten, EvidenceBytes)*windowsEv) {
		return finish(d)
	}

	var sh ruleSet
	sh.atLeast("epochs", f.Epochs, MinShuffledEpochs, 1)
	sh.atLeast("wholeFileRatio", f.WholeFileRatio, MinShuffledWholeFileRatio, 0.2)
	sh.atLeast("coverage", f.Coverage, MinShuffledCoverage, 0.3)
	sh.atMost("hotSetShare", f.HotSetShare, MaxShuffledHotSetShare, 0.2)
	if f.OrderKnown {
		sh.atMost("orderCorrelation", f.OrderCorrelation, MaxShuffledOrderCorrelation, 0.4)
	} else {
		sh.fail("orderCorrelation", "unknown: too few files with two comparable passes")
	}
	if try(v1.ClassShuffledEpochs, &sh, readEv*saturate(f.Epochs-1, 1)) {
		return finish(d)
	}

	var hs ruleSet
	hs.atLeast("hotSetShare", f.HotSetShare, MinHotSetShare, 0.3)
	hs.atLeast("reuse", f.Reuse, MinHotSetReuse, 0.3)
	if try(v1.ClassHotSet, &hs, readEv) {
		return finish(d)
	}

	var sc ruleSet
	sc.atLeast("sequentialRatio", f.SequentialRatio, MinSequentialRatio, 0.2)
	switch {
	case f.Epochs < 2:
		sc.skip("orderCorrelation", "one pass: no order to compare")
	case f.OrderKnown:
		sc.atLeast("orderCorrelation", f.OrderCorrelation, MinStableOrderCorrelation, 0.2)
	case f.Files < features.MinOrderFiles:
		sc.skip("orderCorrelation", "too few files for their order to matter")
	default:
		sc.fail("orderCorrelation", "unknown: the data is read again, in an order that could not be compared")
	}
	if try(v1.ClassSequentialScan, &sc, readEv) {
		return finish(d)
	}

	var rr ruleSet
	rr.atMost("sequentialRatio", f.SequentialRatio, MaxRandomSequentialRatio, 0.3)
	rr.atMost("medianReadBytes", f.MedianReadBytes, MaxRandomReadBytes, MaxRandomReadBytes)
	rr.atMost("wholeFileRatio", f.WholeFileRatio, MaxRandomWholeFileRatio, 0.3)
	randomEv := math.Max(readEv, saturate(f.ReadOps, EvidenceRandomReads)*windowsEv)
	if try(v1.ClassRandomReads, &rr, randomEv) {
		return finish(d)
	}

	d.Class = v1.ClassUnknown
	d.Strength = 1
	d.Evidence = readEv
	d.Confidence = readEv
	return finish(d)
}

func finish(d Decision) Decision {
	var b strings.Builder
	if d.Class == v1.ClassUnknown {
		b.WriteString("no class fits: ")
		for i, c := range d.Candidates {
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "not %s (", c.Class)
			first := true
			for _, r := range c.Rules {
				if r.Passed {
					continue
				}
				if !first {
					b.WriteString(", ")
				}
				first = false
				b.WriteString(r.String())
			}
			b.WriteString(")")
		}
		d.Reason = b.String()
		return d
	}
	fmt.Fprintf(&b, "%s: ", d.Class)
	for i, r := range d.Rules() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.String())
	}
	d.Reason = b.String()
	return d
}
