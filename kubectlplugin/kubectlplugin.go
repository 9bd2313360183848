// Package kubectlplugin implements `kubectl eddy`: the review screen for
// recommendations, approving and rejecting them through the status
// subresource (so the approval webhook decides who may), explaining a
// workload's profile and what was done about it, and a status summary. Every
// function works on a controller-runtime client and writes to an io.Writer.
package kubectlplugin

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// ListOptions choose the recommendations shown.
type ListOptions struct {
	// Namespace to list; "" means every namespace.
	Namespace string
	// All includes closed recommendations (Rejected, Superseded, Expired,
	// Failed, RolledBack, Verified); by default only open ones are shown.
	All bool
}

// Recommendations writes a review table: what each recommendation changes,
// the evidence it was made on, what it expects, and where it stands.
func Recommendations(ctx context.Context, c client.Reader, w io.Writer, o ListOptions) error {
	var list eddyv1alpha1.RecommendationList
	if err := c.List(ctx, &list, client.InNamespace(o.Namespace)); err != nil {
		return fmt.Errorf("list recommendations%s: %w", inNamespace(o.Namespace), err)
	}
	items := list.Items[:0]
	for _, r := range list.Items {
		if o.All || isOpen(r.Status.Phase) {
			items = append(items, r)
		}
	}
	if len(items) == 0 {
		_, err := fmt.Fprintf(w, "No open recommendations%s.\n", inNamespace(o.Namespace))
		return err
	}
	sort.Slice(items, func(i, j int) bool {
		if items[i].Namespace != items[j].Namespace {
			return items[i].Namespace < items[j].Namespace
		}
		return items[i].CreationTimestamp.After(items[j].CreationTimestamp.Time)
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := "NAME\tPHASE\tACTION\tCHANGE\tTARGET\tDATASET\tCLASS\tCONF\tEVIDENCE\tEXPECTED\tAGE"
	if o.Namespace == "" {
		header = "NAMESPACE\t" + header
	}
	fmt.Fprintln(tw, header)
	now := time.Now()
	for _, r := range items {
		row := []string{r.Name, phaseOf(&r), string(r.Spec.Action), change(&r), target(&r), r.Spec.Dataset.Name,
			string(r.Spec.Evidence.Class), fmt.Sprintf("%.2f", r.Spec.Evidence.Confidence), evidence(r.Spec.Evidence.Features), expected(&r),
			age(now, r.CreationTimestamp.Time)}
		if o.Namespace == "" {
			row = append([]string{r.Namespace}, row...)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func inNamespace(ns string) string {
	if ns == "" {
		return " in any namespace"
	}
	return " in namespace " + ns
}

func isOpen(p eddyv1alpha1.RecommendationPhase) bool {
	switch p {
	case "", eddyv1alpha1.PhaseProposed, eddyv1alpha1.PhaseApproved, eddyv1alpha1.PhaseApplied, eddyv1alpha1.PhaseIneffective:
		return true
	}
	return false
}

func phaseOf(r *eddyv1alpha1.Recommendation) string {
	if r.Status.Phase == "" {
		return "New"
	}
	return string(r.Status.Phase)
}

func change(r *eddyv1alpha1.Recommendation) string {
	s := r.Spec
	switch {
	case s.ScaleCache != nil:
		return fmt.Sprintf("%d cache workers", s.ScaleCache.Replicas)
	case s.EvictDataset != nil:
		return fmt.Sprintf("cache to %d, idle since %s", s.EvictDataset.MinReplicas, s.EvictDataset.IdleSince.UTC().Format("2006-01-02 15:04"))
	case s.Prefetch != nil:
		return fmt.Sprintf("%s %s×%d", s.Prefetch.Strategy, s.Prefetch.BlockSize.String(), s.Prefetch.Concurrency)
	case s.SDK != nil:
		return fmt.Sprintf("%s SDK (%s)", orDash(s.SDK.Language), orDash(s.SDK.Framework))
	}
	return "-"
}

func target(r *eddyv1alpha1.Recommendation) string {
	if r.Spec.TargetRef == nil {
		return "-"
	}
	return r.Spec.TargetRef.Kind + "/" + r.Spec.TargetRef.Name
}

func evidence(f *eddyv1alpha1.AccessFeatures) string {
	if f == nil {
		return "-"
	}
	return fmt.Sprintf("wait %.0f%%, %s/s, ws %s, seq %.0f%%", 100*f.ReadWaitShare, iBytes(f.ThroughputBytesPerSecond), iBytes(float64(f.WorkingSetBytes)), 100*f.SequentialRatio)
}

func expected(r *eddyv1alpha1.Recommendation) string {
	if r.Status.Outcome != nil {
		return "measured: " + r.Status.Outcome.Summary
	}
	if b := r.Spec.Evidence.ExpectedBenefit; b != nil {
		return b.Summary
	}
	return "-"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// Approve sets the Approved condition of a Proposed recommendation through
// the status subresource; the approval webhook refuses people without the
// approve verb on recommendations.eddy.io.
func Approve(ctx context.Context, c client.Client, ns, name, message string) (*eddyv1alpha1.Recommendation, error) {
	return decide(ctx, c, ns, name, eddyv1alpha1.ConditionApproved, "ApprovedWithKubectlEddy", message)
}

// Reject sets the Denied condition: an open recommendation is Rejected, an
// applied one is rolled back by the operator.
func Reject(ctx context.Context, c client.Client, ns, name, message string) (*eddyv1alpha1.Recommendation, error) {
	return decide(ctx, c, ns, name, eddyv1alpha1.ConditionDenied, "RejectedWithKubectlEddy", message)
}

func decide(ctx context.Context, c client.Client, ns, name, condType, reason, message string) (*eddyv1alpha1.Recommendation, error) {
	verb := "approve"
	if condType == eddyv1alpha1.ConditionDenied {
		verb = "reject"
	}
	rec := &eddyv1alpha1.Recommendation{}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, rec); err != nil {
			return err
		}
		phase := rec.Status.Phase
		switch {
		case verb == "approve" && phase != "" && phase != eddyv1alpha1.PhaseProposed:
			return fmt.Errorf("recommendation %s/%s is %s: only a Proposed one can be approved", ns, name, phase)
		case verb == "reject" && phase.Final():
			return fmt.Errorf("recommendation %s/%s is already %s: nothing to reject", ns, name, phase)
		}
		meta.SetStatusCondition(&rec.Status.Conditions, metav1.Condition{
			Type: condType, Status: metav1.ConditionTrue, Reason: reason, Message: message, ObservedGeneration: rec.Generation,
		})
		return c.Status().Update(ctx, rec)
	})
	if err != nil {
		return nil, fmt.Errorf("%s recommendation %s/%s: %w (approving and rejecting need the 'approve' verb on recommendations.eddy.io in %s)", verb, ns, name, err, ns)
	}
	return rec, nil
}

// Explain writes what eddy knows of a workload ("Kind/name" or "name", where
// name is the workload's — a run family's — or one of its runs' objects):
// how its name was formed, each dataset it reads, its recent runs, the class
// and the features and rules that decided it, what was recommended and
// applied, and whether it helped, with the numbers that decided it.
func Explain(ctx context.Context, c client.Reader, w io.Writer, ns, workload string) error {
	kind, name := "", workload
	if i := strings.LastIndex(workload, "/"); i >= 0 {
		kind, name = workload[:i], workload[i+1:]
	}
	var profiles eddyv1alpha1.AccessProfileList
	if err := c.List(ctx, &profiles, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("list AccessProfiles in %s: %w", ns, err)
	}
	var recs eddyv1alpha1.RecommendationList
	if err := c.List(ctx, &recs, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("list recommendations in %s: %w", ns, err)
	}
	// A run's object name (train-2) finds its family (train).
	for i := range profiles.Items {
		p := &profiles.Items[i]
		for _, r := range p.Status.RecentRuns {
			if r.Object == name && r.Object != p.Spec.WorkloadRef.Name && (kind == "" || strings.EqualFold(p.Spec.WorkloadRef.Kind, kind)) {
				name = p.Spec.WorkloadRef.Name
			}
		}
	}
	matches := func(ref *eddyv1alpha1.WorkloadReference) bool {
		return ref != nil && ref.Name == name && (kind == "" || strings.EqualFold(ref.Kind, kind))
	}
	now := time.Now()
	found := false
	for i := range profiles.Items {
		p := &profiles.Items[i]
		if !matches(&p.Spec.WorkloadRef) {
			continue
		}
		found = true
		st := p.Status
		fmt.Fprintf(w, "%s/%s reading dataset %s (%s) — profile %s\n", p.Spec.WorkloadRef.Kind, p.Spec.WorkloadRef.Name, p.Spec.Dataset.Name, orDash(string(p.Spec.Dataset.Source)), p.Name)
		fmt.Fprintf(w, "  Workload:    %s\n", familyLine(p.Spec.WorkloadRef, st.RecentRuns))
		fmt.Fprintf(w, "  Class:       %s (confidence %.2f, %d pods, %d windows", orDash(string(st.Class)), st.Confidence, st.ObservedPods, st.Windows)
		if st.LastSeen != nil {
			fmt.Fprintf(w, ", last read %s ago", age(now, st.LastSeen.Time))
		}
		fmt.Fprintln(w, ")")
		if f := st.Features; f != nil {
			fmt.Fprintf(w, "  Reads:       %s in %d ops over %d files; throughput %s/s; read wait %.0f%% of wall time; latency p50 %s p99 %s\n",
				iBytes(float64(f.BytesRead)), f.ReadOps, f.Files, iBytes(f.ThroughputBytesPerSecond), 100*f.ReadWaitShare,
				seconds(f.ReadLatencyP50Seconds), seconds(f.ReadLatencyP99Seconds))
			fmt.Fprintf(w, "  Pattern:     sequential %.0f%%, whole-file %.0f%%, coverage %.0f%%/epoch, %.1f epochs, reuse %.0f%%, hot set %.0f%%, working set %s, page-cache miss %.0f%%\n",
				100*f.SequentialRatio, 100*f.WholeFileRatio, 100*f.Coverage, f.Epochs, 100*f.Reuse, 100*f.HotSetShare, iBytes(float64(f.WorkingSetBytes)), 100*f.PageCacheMissRatio)
		}
		if len(st.RecentRuns) > 0 {
			fmt.Fprintln(w, "  Runs:")
			for _, r := range st.RecentRuns {
				fmt.Fprintf(w, "    %s\n", runLine(r))
			}
		}
		if len(st.Decisions) > 0 {
			fmt.Fprintln(w, "  Decided by:")
			for _, d := range st.Decisions {
				mark := "✗"
				if d.Held {
					mark = "✓"
				}
				fmt.Fprintf(w, "    %s %s: %s = %.3g (threshold %.3g)\n", mark, d.Rule, d.Feature, d.Value, d.Threshold)
			}
		}
		none := "nothing yet"
		if !eddyv1alpha1.RunSeenWhole(st.RecentRuns, eddyv1alpha1.DefaultLongRunAfter) {
			none = fmt.Sprintf("nothing yet: a workload is advised once one of its runs ended, or has read for %s (the analyzer's --long-run-after)", eddyv1alpha1.DefaultLongRunAfter)
		}
		explainRecommendations(w, recs.Items, none, func(r *eddyv1alpha1.Recommendation) bool {
			return matches(r.Spec.TargetRef) && r.Spec.Dataset.Name == p.Spec.Dataset.Name
		})
		fmt.Fprintln(w)
	}
	if !found {
		var seen bool
		explainRecommendations(w, recs.Items, "nothing yet", func(r *eddyv1alpha1.Recommendation) bool {
			seen = seen || matches(r.Spec.TargetRef)
			return matches(r.Spec.TargetRef)
		})
		if !seen {
			return fmt.Errorf("no AccessProfile or recommendation for workload %q in namespace %s: is the namespace labelled %s=%s and has the workload read data?",
				workload, ns, eddyv1alpha1.AutotuneLabel, eddyv1alpha1.AutotuneEnabled)
		}
	}
	return nil
}

// explainRecommendations writes the recommendations keep selects, or none
// when there are none.
func explainRecommendations(w io.Writer, all []eddyv1alpha1.Recommendation, none string, keep func(*eddyv1alpha1.Recommendation) bool) {
	var recs []*eddyv1alpha1.Recommendation
	for i := range all {
		if keep(&all[i]) {
			recs = append(recs, &all[i])
		}
	}
	if len(recs) == 0 {
		fmt.Fprintln(w, "  Recommended: "+none)
		return
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].CreationTimestamp.Before(&recs[j].CreationTimestamp) })
	fmt.Fprintln(w, "  Recommended:")
	for _, r := range recs {
		line := fmt.Sprintf("    %s: %s %s — %s", r.Name, r.Spec.Action, change(r), phaseOf(r))
		if r.Status.AppliedAt != nil {
			line += ", applied " + r.Status.AppliedAt.UTC().Format(time.RFC3339)
		}
		switch {
		case r.Status.Outcome != nil:
			line += "; " + r.Status.Outcome.Summary
		case r.Status.Phase == eddyv1alpha1.PhaseApplied:
			line += "; not judged yet"
		}
		fmt.Fprintln(w, line)
		if v := r.Status.Verification; v != nil {
			fmt.Fprintf(w, "      before: %s\n      after:  %s (%s)\n", statsLine(v.Before), statsLine(v.After), strings.Join(v.Runs, ", "))
		}
		if c := latestCondition(r); c != nil {
			fmt.Fprintf(w, "      %s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
		}
	}
}

// familyLine says what the workload is and how its name was formed.
func familyLine(ref eddyv1alpha1.WorkloadReference, runs []eddyv1alpha1.RunSummary) string {
	var objects []string
	for _, r := range runs {
		if r.Object != "" && !slices.Contains(objects, r.Object) {
			objects = append(objects, r.Object)
		}
	}
	var why string
	switch ref.Rule {
	case eddyv1alpha1.RuleLabel:
		why = fmt.Sprintf("runs labelled %s=%s", eddyv1alpha1.WorkloadLabel, ref.Name)
	case eddyv1alpha1.RuleGenerateName:
		why = fmt.Sprintf("%ss created with generateName %s-", ref.Kind, ref.Name)
	case eddyv1alpha1.RuleNameSuffix:
		why = fmt.Sprintf("%ss named %s-<run number or date>", ref.Kind, ref.Name)
	case eddyv1alpha1.RuleKubeflowLabels:
		why = "pods whose Kubeflow labels name the job"
	default:
		return fmt.Sprintf("%s %s (the object itself; label it %s=NAME to name the workload yourself)", ref.Kind, ref.Name, eddyv1alpha1.WorkloadLabel)
	}
	line := fmt.Sprintf("run family %s (rule %s: %s)", ref.Name, ref.Rule, why)
	if len(objects) > 0 {
		line += "; recent runs " + strings.Join(objects, ", ")
	}
	return line + fmt.Sprintf("; label runs %s=NAME to join or split families", eddyv1alpha1.WorkloadLabel)
}

func runLine(r eddyv1alpha1.RunSummary) string {
	who := r.Pod
	if r.Object != "" && !strings.HasPrefix(r.Pod, r.Object) {
		who = r.Object + " (pod " + r.Pod + ")"
	}
	line := fmt.Sprintf("%s: %s in %.1fs from %s, throughput %s/s, read wait %.0f%%", who, iBytes(float64(r.BytesRead)), r.WallSeconds,
		r.Start.UTC().Format(time.RFC3339), iBytes(r.ThroughputBytesPerSecond), 100*r.ReadWaitShare)
	if len(r.Recommendations) > 0 {
		line += "; applied: " + strings.Join(r.Recommendations, ", ")
	}
	if !r.Ended {
		line += " (still reading)"
	}
	return line
}

func statsLine(s eddyv1alpha1.RunStats) string {
	if s.Runs == 0 {
		return fmt.Sprintf("profile features: throughput %s/s, read wait %.0f%%", iBytes(s.ThroughputBytesPerSecond), 100*s.ReadWaitShare)
	}
	return fmt.Sprintf("%d run(s): %s read in %.1fs, throughput %s/s, read wait %.0f%%", s.Runs, iBytes(float64(s.BytesRead)), s.WallSeconds, iBytes(s.ThroughputBytesPerSecond), 100*s.ReadWaitShare)
}

func latestCondition(r *eddyv1alpha1.Recommendation) *metav1.Condition {
	var latest *metav1.Condition
	for i := range r.Status.Conditions {
		c := &r.Status.Conditions[i]
		if latest == nil || !c.LastTransitionTime.Before(&latest.LastTransitionTime) {
			latest = c
		}
	}
	return latest
}

func seconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Microsecond).String()
}

// StatusOptions locate what Status reports on.
type StatusOptions struct {
	// Namespace to report on; "" means every namespace with eddy objects.
	Namespace string
	// OperatorNamespace and AnalyzerLease locate the analyzer's heartbeat.
	OperatorNamespace string
	AnalyzerLease     string
}

// Status writes, per namespace, the policy in force and its change budget,
// recommendations by phase, profiles by class and evicted datasets, after
// the analyzer's heartbeat.
func Status(ctx context.Context, c client.Reader, w io.Writer, o StatusOptions) error {
	now := time.Now()
	lease := &coordinationv1.Lease{}
	switch err := c.Get(ctx, client.ObjectKey{Namespace: o.OperatorNamespace, Name: o.AnalyzerLease}, lease); {
	case err != nil:
		fmt.Fprintf(w, "Analyzer heartbeat: unknown (Lease %s/%s: %v)\n", o.OperatorNamespace, o.AnalyzerLease, err)
	case lease.Spec.RenewTime == nil:
		fmt.Fprintf(w, "Analyzer heartbeat: never renewed (Lease %s/%s)\n", o.OperatorNamespace, o.AnalyzerLease)
	default:
		fmt.Fprintf(w, "Analyzer heartbeat: renewed %s ago by %s (Lease %s/%s)\n", age(now, lease.Spec.RenewTime.Time), ptrString(lease.Spec.HolderIdentity), o.OperatorNamespace, o.AnalyzerLease)
	}
	var pols eddyv1alpha1.AutotunePolicyList
	var recs eddyv1alpha1.RecommendationList
	var profs eddyv1alpha1.AccessProfileList
	var pvcs corev1.PersistentVolumeClaimList
	for _, l := range []client.ObjectList{&pols, &recs, &profs, &pvcs} {
		if err := c.List(ctx, l, client.InNamespace(o.Namespace)); err != nil {
			return fmt.Errorf("list %T%s: %w", l, inNamespace(o.Namespace), err)
		}
	}
	namespaces := map[string]bool{}
	if o.Namespace != "" {
		namespaces[o.Namespace] = true
	}
	for _, p := range pols.Items {
		namespaces[p.Namespace] = true
	}
	for _, r := range recs.Items {
		namespaces[r.Namespace] = true
	}
	for _, p := range profs.Items {
		namespaces[p.Namespace] = true
	}
	names := make([]string, 0, len(namespaces))
	for ns := range namespaces {
		names = append(names, ns)
	}
	sort.Strings(names)
	for _, ns := range names {
		fmt.Fprintf(w, "\nNamespace %s\n", ns)
		var pol *eddyv1alpha1.AutotunePolicy
		for i := range pols.Items {
			p := &pols.Items[i]
			if p.Namespace == ns && (pol == nil || p.Name == "default" || (pol.Name != "default" && p.CreationTimestamp.Before(&pol.CreationTimestamp))) {
				pol = p
			}
		}
		if pol == nil {
			fmt.Fprintln(w, "  Policy:      none (mode Recommend: nothing is applied without approval)")
		} else {
			s := pol.Spec
			fmt.Fprintf(w, "  Policy:      %s, mode %s, auto-apply %v", pol.Name, orDash(string(s.Mode)), s.AutoApply)
			if s.MinConfidence != nil {
				fmt.Fprintf(w, ", min confidence %.2f", *s.MinConfidence)
			}
			if s.CacheWorkers != nil {
				fmt.Fprintf(w, ", cache workers %d..%d", s.CacheWorkers.Min, s.CacheWorkers.Max)
			}
			if s.DryRun {
				fmt.Fprint(w, ", DRY RUN")
			}
			fmt.Fprintln(w)
			if c := meta.FindStatusCondition(pol.Status.Conditions, eddyv1alpha1.ConditionBudgetExhausted); c != nil {
				fmt.Fprintf(w, "  Budget:      %s\n", c.Message)
			}
		}
		byPhase := map[string]int{}
		for i := range recs.Items {
			if r := &recs.Items[i]; r.Namespace == ns {
				byPhase[phaseOf(r)]++
			}
		}
		fmt.Fprintf(w, "  Recommendations: %s\n", counts(byPhase))
		byClass := map[string]int{}
		for _, p := range profs.Items {
			if p.Namespace == ns {
				byClass[orDash(string(p.Status.Class))]++
			}
		}
		fmt.Fprintf(w, "  Profiles:    %s\n", counts(byClass))
		for _, p := range pvcs.Items {
			if p.Namespace != ns || p.Annotations[eddyv1alpha1.EvictedAtAnnotation] == "" {
				continue
			}
			fmt.Fprintf(w, "  Evicted:     %s at %s by %s: %s\n", p.Name, p.Annotations[eddyv1alpha1.EvictedAtAnnotation], p.Annotations[eddyv1alpha1.EvictedByAnnotation], p.Annotations[eddyv1alpha1.EvictedReasonAnnotation])
		}
	}
	return nil
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func ptrString(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

// iBytes renders a byte amount for people, in binary units.
func iBytes(b float64) string { return humanize.IBytes(uint64(max(b, 0))) }
