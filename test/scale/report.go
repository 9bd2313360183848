package scale

import (
	"fmt"
	"strings"
	"time"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Goal is one of issue 19's goals, judged on a Result.
type Goal struct {
	What, Measured string
	Met            bool
}

// DuplicateShare is the share of windows received that were duplicates.
func (r *Result) DuplicateShare() float64 {
	if total := r.WindowsApplied + r.WindowsDuplicate; total > 0 {
		return r.WindowsDuplicate / total
	}
	return 0
}

// AnalyzerPerWorkload is the analyzer's RSS at the end over the workloads
// (the whole process), and what it grew by from before the first window.
func (r *Result) AnalyzerPerWorkload() (whole, grown float64) {
	w := float64(r.Size.Workloads)
	return float64(r.AnalyzerEnd.RSS) / w, (float64(r.AnalyzerEnd.RSS) - float64(r.AnalyzerStart.RSS)) / w
}

// WebhookPer1000 is what the webhook's RSS grew by per 1,000 pods, opted
// in and not.
func (r *Result) WebhookPer1000() (optedIn, notOptedIn float64) {
	optedIn = (float64(r.WebhookOptedIn.RSS) - float64(r.WebhookBase.RSS)) / float64(r.Size.Pods()) * 1000
	if r.PlainPods > 0 {
		notOptedIn = (float64(r.WebhookPlain.RSS) - float64(r.WebhookOptedIn.RSS)) / float64(r.PlainPods) * 1000
	}
	return optedIn, notOptedIn
}

// Goals judges issue 19's goals on r. Sizes below the say so: a goal
// met there is met at that size only.
func (r *Result) Goals() []Goal {
	s := r.Size
	whole, _ := r.AnalyzerPerWorkload()
	opted, notOpted := r.WebhookPer1000()
	return []Goal{
		{"accepted ≥ 95% of offered", fmt.Sprintf("%.0f of %.0f records/s (%.0f%%)", r.AcceptedPerSecond, r.OfferedPerSecond, 100*r.AcceptedPerSecond/r.OfferedPerSecond),
			r.AcceptedPerSecond >= 0.95*r.OfferedPerSecond},
		{"no window lost by the collectors", fmt.Sprintf("%d lost", r.Lost), r.Lost == 0},
		{"duplicate windows < 5%", fmt.Sprintf("%.1f%%", 100*r.DuplicateShare()), r.DuplicateShare() < 0.05},
		{fmt.Sprintf("Lease never stale (< %s)", v1.AnalyzerStaleAfter), fmt.Sprintf("at most %s old", r.LeaseMaxAge.Round(time.Second)), r.LeaseMaxAge < v1.AnalyzerStaleAfter},
		{fmt.Sprintf("every profile updated within two intervals (%s)", 2*s.Interval),
			fmt.Sprintf("%d of %d samples late or missing; longest lag %s", r.StaleSamples, r.Samples, r.ProfileMaxLag.Round(time.Second)), r.StaleSamples == 0 && r.Samples > 0},
		{"the analyzer's /metrics answers every scrape (10 s each; a liveness probe's view)", fmt.Sprintf("%d unanswered; longest %s", r.Unanswered, r.UnansweredMax.Round(time.Second)), r.Unanswered == 0},
		{"analyzer ≤ 100 KiB per workload (RSS of the process / workloads)", fmt.Sprintf("%.0f KiB", whole/1024), whole <= 100<<10},
		{"webhook memory bounded by opted-in pods (pods not opted in add < 1/10 of what opted-in pods add)",
			fmt.Sprintf("%.2f MiB vs %.2f MiB per 1,000 pods", notOpted/(1<<20), opted/(1<<20)), notOpted < opted/10},
	}
}

// Markdown is the report: the size, the side-by-side table and the goals.
func Markdown(r *Result, command string) string {
	s := r.Size
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	whole, grown := r.AnalyzerPerWorkload()
	opted, notOpted := r.WebhookPer1000()
	p("# Scale benchmark (%s size), one run", s.Name)
	p("")
	p("`%s`: a real kube-apiserver, etcd, scheduler and controller-manager with %d kwok nodes; eddy's analyzer, webhook and operator as `bin/eddy` processes under their service accounts; "+
		"one collector identity per node (a pod of eddy-system/eddy-collector bound to it, its projected token) shipping through the analyzer's TLS gRPC intake with the collector's own shipper.", command, s.Nodes)
	p("")
	p("Size: %d workloads × %d pods (%d pods) in %d opted-in namespaces, %d pods not opted in; %d records per pod per %s window (%.0f records/s offered); %d intervals of warm-up, %d measured (%s). Load average %s before, %s after.",
		s.Workloads, s.PodsPerWorkload, s.Pods(), s.Namespaces, r.PlainPods, s.FilesPerPod, s.Interval, s.OfferedPerSecond(), s.Warmup, s.Windows, r.Measured.Round(time.Second), r.LoadBefore, r.LoadAfter)
	p("")
	p("| | measured |")
	p("|---|---|")
	p("| new records/s accepted / offered | %.0f / %.0f (%.0f%%) |", r.AcceptedPerSecond, r.OfferedPerSecond, 100*r.AcceptedPerSecond/r.OfferedPerSecond)
	p("| windows applied / duplicate (share) | %.0f / %.0f (%.1f%%) |", r.WindowsApplied, r.WindowsDuplicate, 100*r.DuplicateShare())
	p("| windows unacknowledged at the end; lost by the collectors (buffer of %d full, …); failed Ship calls (whole run) | %d; %d; %d |", fleetMaxBuffered, r.Buffered, r.Lost, r.ShipFailures)
	p("| flushes (checkpoints durable, windows acknowledged); duration mean / max | %d; %s / %s |", r.Flushes, r.FlushMean.Round(time.Millisecond), r.FlushMax.Round(time.Millisecond))
	p("| profile writes behind the local checkpoint log: rounds; duration mean / max; keys waiting, most seen | %d; %s / %s; %.0f |", r.Rounds, r.RoundMean.Round(time.Millisecond), r.RoundMax.Round(time.Millisecond), r.PendingMax)
	p("| analyzer /metrics scrapes unanswered in 10 s; longest time without an answer | %d; %s |", r.Unanswered, r.UnansweredMax.Round(time.Second))
	p("| heartbeat Lease, oldest seen (sampled each second, whole run) | %s |", r.LeaseMaxAge.Round(time.Second))
	p("| profiles at the end; longest lag of a profile's lastSeen; samples over two intervals | %d; %s; %d of %d |", r.Profiles, r.ProfileMaxLag.Round(time.Second), r.StaleSamples, r.Samples)
	p("| analyzer RSS before the first window → end (peak) | %s → %s (%s) |", mib(r.AnalyzerStart.RSS), mib(r.AnalyzerEnd.RSS), mib(r.AnalyzerEnd.HWM))
	p("| analyzer RSS per workload: whole process / grown while shipping | %.0f KiB / %.0f KiB |", whole/1024, grown/1024)
	p("| analyzer live heap (after a collection) before the first window → end; grown per workload | %s → %s; %.0f KiB |", mib(r.AnalyzerLiveStart), mib(r.AnalyzerLiveEnd),
		(float64(r.AnalyzerLiveEnd)-float64(r.AnalyzerLiveStart))/float64(s.Workloads)/1024)
	p("| webhook RSS: caches synced → opted-in pods → others | %s → %s → %s |", mib(r.WebhookBase.RSS), mib(r.WebhookOptedIn.RSS), mib(r.WebhookPlain.RSS))
	p("| webhook RSS per 1,000 pods: opted in / not | %.2f MiB / %.2f MiB |", opted/(1<<20), notOpted/(1<<20))
	p("| opted-in pods Running (through the webhook) | %.0f s (%.0f pods/s) |", r.PodsRunningSeconds, float64(s.Pods())/r.PodsRunningSeconds)
	conv := "not converged"
	if r.OperatorConverge > 0 {
		conv = r.OperatorConverge.Round(time.Second).String()
	}
	p("| operator: %d Prefetch recommendations (Auto) Applied | %d, in %s |", s.Workloads, r.OperatorApplied, conv)
	if r.Reconciles > 0 {
		p("| operator: reconciles; API requests / reconcile; eddy events / reconcile | %.0f; %.2f; %.2f |", r.Reconciles, r.OperatorRequests/r.Reconciles, r.EddyEvents/r.Reconciles)
	}
	p("")
	p("## Goals (issue 19; at this size)")
	p("")
	p("| goal | measured | met |")
	p("|---|---|---|")
	for _, g := range r.Goals() {
		met := "**no**"
		if g.Met {
			met = "yes"
		}
		p("| %s | %s | %s |", g.What, g.Measured, met)
	}
	for _, h := range []struct{ what, top string }{
		{"live heap before the first window (`go tool pprof -top`, inuse_space)", r.AnalyzerHeapStart},
		{"live heap at the end (`go tool pprof -top`, inuse_space)", r.AnalyzerHeapEnd},
		{"CPU over the first half of the measured intervals (`go tool pprof -top -cum`)", r.AnalyzerCPU},
	} {
		if h.top == "" {
			continue
		}
		p("")
		p("## The analyzer's %s", h.what)
		p("")
		p("```")
		p("%s", h.top)
		p("```")
	}
	return b.String()
}
