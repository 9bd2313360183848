package demo

import (
	"context"
	"fmt"
	"slices"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// waitVerdict waits for the operator to judge the applied recommendation by
// the next pod's run, then keeps watching for Options.Watch: a verdict that
// does not hold (a Verified recommendation rolled back, an Ineffective one
// rolled back more than once or proposed again) is what a person would see
// a minute after the demo, so the demo looks for it.
func (r *run) waitVerdict(ctx context.Context, res *Result) error {
	name := res.Applied.Name
	r.step("waiting for the operator's verdict on %s, from the run it was applied to (%s)", name, res.NextPod.Name)
	rec := &v1.Recommendation{}
	err := r.poll(ctx, 90*time.Second, "verdict on "+name, "operator", func() (bool, error) {
		if err := r.env.Client.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: name}, rec); err != nil {
			return false, err
		}
		switch rec.Status.Phase {
		case v1.PhaseVerified, v1.PhaseRolledBack:
			return true, nil
		case v1.PhaseIneffective:
			// Under the Auto policy it is rolled back next.
			return false, nil
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	res.Verdict = rec.DeepCopy()
	r.say("  %s is %s: %s", name, rec.Status.Phase, outcome(rec))
	if v := rec.Status.Verification; v != nil {
		r.say("  before: %d run(s), %.1fs of its %.1fs waiting on reads (%.0f%%), %.1f MiB/s", v.Before.Runs, v.Before.ReadWaitShare*v.Before.WallSeconds, v.Before.WallSeconds, 100*v.Before.ReadWaitShare, v.Before.ThroughputBytesPerSecond/(1<<20))
		r.say("  after:  %d run(s) %v, %.1fs of its %.1fs waiting on reads (%.0f%%), %.1f MiB/s", v.After.Runs, v.Runs, v.After.ReadWaitShare*v.After.WallSeconds, v.After.WallSeconds, 100*v.After.ReadWaitShare, v.After.ThroughputBytesPerSecond/(1<<20))
	}

	r.step("watching for %s: the verdict must hold and nothing be proposed again", r.o.Watch)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(r.o.Watch):
	}
	var list v1.RecommendationList
	if err := r.env.Client.List(ctx, &list, client.InNamespace(Namespace)); err != nil {
		return err
	}
	res.Later = list.Items
	res.Watched = r.o.Watch
	if err := r.env.Client.Get(ctx, client.ObjectKeyFromObject(&res.Profile), &res.ProfileAfter); err != nil {
		return err
	}
	for _, l := range res.Later {
		switch {
		case l.Name == name:
			r.say("  %s: still %s", l.Name, l.Status.Phase)
		case l.Spec.Action == rec.Spec.Action && l.CreationTimestamp.After(rec.CreationTimestamp.Time):
			r.say("  %s: a new %s proposed after it (%s)", l.Name, l.Spec.Action, l.Status.Phase)
		}
	}
	return nil
}

func outcome(rec *v1.Recommendation) string {
	if rec.Status.Outcome != nil {
		return rec.Status.Outcome.Summary
	}
	return "no outcome recorded"
}

// Stable reports whether the verdict held for Options.Watch: the judged
// recommendation is in the same phase, and no newer recommendation of its
// action was proposed for its profile.
func (res *Result) Stable() bool {
	if res.Verdict == nil {
		return false
	}
	i := slices.IndexFunc(res.Later, func(l v1.Recommendation) bool { return l.Name == res.Verdict.Name })
	if i < 0 || res.Later[i].Status.Phase != res.Verdict.Status.Phase {
		return false
	}
	return len(res.Reproposed()) == 0
}

// Reproposed are the recommendations of the verdict's action made from its
// profile after it.
func (res *Result) Reproposed() []string {
	var out []string
	for _, l := range res.Later {
		if res.Verdict != nil && l.Name != res.Verdict.Name && l.Spec.Action == res.Verdict.Spec.Action &&
			l.Spec.Evidence.Profile == res.Verdict.Spec.Evidence.Profile && l.CreationTimestamp.After(res.Verdict.CreationTimestamp.Time) {
			out = append(out, l.Name)
		}
	}
	return out
}

// summaryLine is the demo's last line: the class, what was applied, its
// verdict with the numbers that decided it, the job time before and after,
// and whether the verdict held.
func summaryLine(res *Result) string {
	if res.Applied == nil {
		return fmt.Sprintf("%s: nothing applied", res.Profile.Status.Class)
	}
	s := fmt.Sprintf("%s → %s", res.Profile.Status.Class, res.Applied.Spec.Action)
	if p := res.Applied.Spec.Prefetch; p != nil {
		s += " (" + string(p.Strategy) + ")"
	}
	if res.Verdict == nil {
		return s + fmt.Sprintf(" %s, not judged (no before/after run with --local)", res.Applied.Status.Phase)
	}
	s += fmt.Sprintf(" %s", res.Verdict.Status.Phase)
	if v := res.Verdict.Status.Verification; v != nil {
		// Seconds, not the share of wall time: a job with little compute
		// spends most of its time in reads even when they are all hits, so
		// its share stays near 90% while the wait itself falls fivefold.
		s += fmt.Sprintf(" (waiting on reads %.1fs → %.1fs, %.1f → %.1f MiB/s)", v.Before.ReadWaitShare*v.Before.WallSeconds, v.After.ReadWaitShare*v.After.WallSeconds,
			v.Before.ThroughputBytesPerSecond/(1<<20), v.After.ThroughputBytesPerSecond/(1<<20))
	}
	s += fmt.Sprintf("; job %.1fs cold → %.1fs with eddy (%.1f×)", res.ColdSeconds, res.WarmSeconds, res.Speedup)
	if res.Stable() {
		s += fmt.Sprintf("; %s later still %s, nothing proposed again", res.Watched, res.Verdict.Status.Phase)
	} else {
		s += "; the verdict did NOT hold: see kubectl eddy explain"
	}
	return s
}
