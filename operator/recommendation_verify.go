package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/dustin/go-humanize"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// verifyRetry is how often an applied recommendation is looked at again while
// it waits for fresh profile data or for its cache to shrink.
const verifyRetry = 30 * time.Second

// verify judges an Applied recommendation by the runs after it (see
// MinReadWaitDrop and MinThroughputRise). A pod-level one is first rolled out
// when the policy allows restarts.
func (r *RecommendationReconciler) verify(ctx context.Context, rec *eddyv1alpha1.Recommendation, pol effectivePolicy) (ctrl.Result, error) {
	if rec.Spec.Action.PodLevel() && pol.rolloutRestart && rec.Spec.TargetRef != nil && rec.Spec.TargetRef.IsObject() {
		c := meta.FindStatusCondition(rec.Status.Conditions, eddyv1alpha1.ConditionRestarted)
		if c == nil || c.Status == metav1.ConditionUnknown {
			return r.restart(ctx, rec, pol)
		}
	}
	if rec.Spec.Action == eddyv1alpha1.ActionEvictDataset {
		return r.verifyEvicted(ctx, rec)
	}
	prof, err := r.profileFor(ctx, rec)
	if err != nil {
		return ctrl.Result{}, err
	}
	settled := rec.Status.AppliedAt.Add(max(r.Options.VerifySettle, 0))
	before, ok := baseline(rec)
	if !ok {
		return r.setVerified(ctx, rec, metav1.ConditionUnknown, "NoBaseline", "the evidence carries neither runs nor features to compare with", 0)
	}
	var runs []eddyv1alpha1.RunSummary
	if prof != nil {
		runs = prof.Status.RecentRuns
	}
	after, pods := runsAfter(rec, runs, settled, before)
	if after.Runs == 0 {
		wait := verifyRetry
		if !rec.Spec.Action.PodLevel() {
			wait = max(settled.Sub(r.Options.Now()), verifyRetry)
		}
		return r.setVerified(ctx, rec, metav1.ConditionUnknown, "AwaitingFreshData", awaitingMessage(rec, settled, before), wait)
	}
	helped, summary := judge(before, after)
	rec.Status.Outcome = &eddyv1alpha1.Benefit{Summary: summary, ReadWaitShare: &after.ReadWaitShare, ThroughputBytesPerSecond: &after.ThroughputBytesPerSecond}
	rec.Status.Verification = &eddyv1alpha1.Verification{Before: before, After: after, Runs: pods}
	if helped {
		rec.Status.Phase = eddyv1alpha1.PhaseVerified
		setCondition(rec, eddyv1alpha1.ConditionVerified, metav1.ConditionTrue, eddyv1alpha1.ReasonHelped, summary)
		if err := r.Status().Update(ctx, rec); err != nil {
			return ctrl.Result{}, fmt.Errorf("mark recommendation %s/%s Verified: %w", rec.Namespace, rec.Name, err)
		}
		r.Recorder.normal(rec, "Verified", "Verify", "%s", summary)
		return ctrl.Result{}, nil
	}
	rec.Status.Phase = eddyv1alpha1.PhaseIneffective
	msg := summary
	if pol.mode != eddyv1alpha1.ModeAuto {
		msg += fmt.Sprintf("; policy mode is %s, so it stays applied until a person rejects it (kubectl eddy reject %s rolls it back)", pol.mode, rec.Name)
	}
	setCondition(rec, eddyv1alpha1.ConditionVerified, metav1.ConditionFalse, eddyv1alpha1.ReasonIneffective, msg)
	if err := r.Status().Update(ctx, rec); err != nil {
		return ctrl.Result{}, fmt.Errorf("mark recommendation %s/%s Ineffective: %w", rec.Namespace, rec.Name, err)
	}
	r.Recorder.warning(rec, "Ineffective", "Verify", "%s", msg)
	return ctrl.Result{}, nil
}

// baseline is what the recommendation's evidence saw: the mean of its runs
// (a run still reading when the recommendation was made is a sample of it),
// else (evidence written before runs were kept) its features.
func baseline(rec *eddyv1alpha1.Recommendation) (eddyv1alpha1.RunStats, bool) {
	var runs []eddyv1alpha1.RunSummary
	for _, run := range rec.Spec.Evidence.Runs {
		if run.BytesRead > 0 && run.WallSeconds > 0 {
			runs = append(runs, run)
		}
	}
	if len(runs) > 0 {
		return meanOf(runs), true
	}
	if f := rec.Spec.Evidence.Features; f != nil {
		return eddyv1alpha1.RunStats{BytesRead: f.BytesRead, ReadWaitShare: f.ReadWaitShare, ThroughputBytesPerSecond: f.ThroughputBytesPerSecond}, true
	}
	return eddyv1alpha1.RunStats{}, false
}

// runsAfter selects the runs that judge rec (see MinJudgedBytesShare) and
// returns their mean and their pods.
func runsAfter(rec *eddyv1alpha1.Recommendation, runs []eddyv1alpha1.RunSummary, settled time.Time, before eddyv1alpha1.RunStats) (eddyv1alpha1.RunStats, []string) {
	var judged []eddyv1alpha1.RunSummary
	var pods []string
	for _, run := range runs {
		if !judgeable(run, before) {
			continue
		}
		if rec.Spec.Action.PodLevel() {
			if !slices.Contains(run.Recommendations, rec.Name) {
				continue
			}
		} else if !run.Start.After(settled) {
			// API times have one-second resolution: a run that started in
			// the second the change settled may have started before it.
			continue
		}
		judged = append(judged, run)
		pods = append(pods, run.Pod)
	}
	if len(judged) == 0 {
		return eddyv1alpha1.RunStats{}, nil
	}
	return meanOf(judged), pods
}

// judgeable says whether a run has read enough to judge by: it ended having
// read at least MinJudgedBytesShare of the baseline's bytes, or — a
// long-lived pod that never ends — it has read as much as the baseline over
// at least MinOpenRunSeconds.
func judgeable(run eddyv1alpha1.RunSummary, before eddyv1alpha1.RunStats) bool {
	if run.WallSeconds <= 0 || run.BytesRead <= 0 {
		return false
	}
	if run.Ended {
		return float64(run.BytesRead) >= MinJudgedBytesShare*float64(before.BytesRead)
	}
	return run.BytesRead >= before.BytesRead && run.WallSeconds >= MinOpenRunSeconds
}

// meanOf averages runs.
func meanOf(runs []eddyv1alpha1.RunSummary) eddyv1alpha1.RunStats {
	var s eddyv1alpha1.RunStats
	var bytes float64
	for _, run := range runs {
		bytes += float64(run.BytesRead)
		s.WallSeconds += run.WallSeconds
		s.ReadWaitShare += run.ReadWaitShare
		s.ThroughputBytesPerSecond += run.ThroughputBytesPerSecond
	}
	n := float64(len(runs))
	s.Runs = int32(len(runs))
	s.BytesRead = int64(bytes / n)
	s.WallSeconds = roundTo(s.WallSeconds/n, 3)
	s.ReadWaitShare = roundTo(s.ReadWaitShare/n, 3)
	s.ThroughputBytesPerSecond = math.Round(s.ThroughputBytesPerSecond / n)
	return s
}

func roundTo(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

func awaitingMessage(rec *eddyv1alpha1.Recommendation, settled time.Time, before eddyv1alpha1.RunStats) string {
	enough := iBytes(MinJudgedBytesShare * float64(before.BytesRead))
	if rec.Spec.Action.PodLevel() {
		return fmt.Sprintf("waiting for a run of %s that this recommendation was applied to (its pod annotated %s=%s) to end, having read at least %s",
			targetName(rec), eddyv1alpha1.RecommendationAnnotation, rec.Name, enough)
	}
	return fmt.Sprintf("waiting for a run of %s that started after %s to end, having read at least %s", targetName(rec), settled.UTC().Format(time.RFC3339), enough)
}

// judge compares the runs after the change with the baseline.
func judge(before, after eddyv1alpha1.RunStats) (bool, string) {
	waitDropped := before.ReadWaitShare > 0 && after.ReadWaitShare <= before.ReadWaitShare*(1-MinReadWaitDrop)
	rose := before.ThroughputBytesPerSecond > 0 && after.ThroughputBytesPerSecond >= before.ThroughputBytesPerSecond*(1+MinThroughputRise)
	summary := fmt.Sprintf("read wait %.0f%% → %.0f%% of wall time, throughput %s/s → %s/s",
		100*before.ReadWaitShare, 100*after.ReadWaitShare, iBytes(before.ThroughputBytesPerSecond), iBytes(after.ThroughputBytesPerSecond))
	if before.Runs > 0 && before.WallSeconds > 0 {
		summary += fmt.Sprintf(", reading time %.1fs → %.1fs", before.WallSeconds, after.WallSeconds)
	}
	summary += fmt.Sprintf(" (%s, %s)", runsWord(before.Runs, "before"), runsWord(after.Runs, "after"))
	if waitDropped || rose {
		return true, "helped: " + summary
	}
	return false, fmt.Sprintf("did not help: %s (needs read wait −%.0f%% or throughput +%.0f%%)", summary, 100*MinReadWaitDrop, 100*MinThroughputRise)
}

func runsWord(n int32, when string) string {
	switch n {
	case 0:
		return "profile features " + when
	case 1:
		return "1 run " + when
	}
	return fmt.Sprintf("%d runs %s", n, when)
}

func (r *RecommendationReconciler) setVerified(ctx context.Context, rec *eddyv1alpha1.Recommendation, status metav1.ConditionStatus, reason, msg string, requeue time.Duration) (ctrl.Result, error) {
	if setCondition(rec, eddyv1alpha1.ConditionVerified, status, reason, msg) {
		if err := r.Status().Update(ctx, rec); err != nil {
			return ctrl.Result{}, fmt.Errorf("record verification of recommendation %s/%s: %w", rec.Namespace, rec.Name, err)
		}
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// verifyEvicted confirms an eviction once the cache target runs no more
// workers than it was scaled to.
func (r *RecommendationReconciler) verifyEvicted(ctx context.Context, rec *eddyv1alpha1.Recommendation) (ctrl.Result, error) {
	t, err := r.scaler.targetFor(ctx, rec.Namespace, rec.Spec.Dataset, nil)
	if err != nil {
		return ctrl.Result{}, err
	}
	spec, status, _, err := r.scaler.scaleOf(ctx, t)
	if err != nil {
		return ctrl.Result{}, err
	}
	if status > spec {
		return r.setVerified(ctx, rec, metav1.ConditionUnknown, "Shrinking", fmt.Sprintf("%s still runs %d workers, wants %d", t, status, spec), 5*time.Second)
	}
	rec.Status.Phase = eddyv1alpha1.PhaseVerified
	setCondition(rec, eddyv1alpha1.ConditionVerified, metav1.ConditionTrue, "CacheReleased", fmt.Sprintf("%s runs %d workers", t, status))
	if err := r.Status().Update(ctx, rec); err != nil {
		return ctrl.Result{}, fmt.Errorf("mark recommendation %s/%s Verified: %w", rec.Namespace, rec.Name, err)
	}
	r.Recorder.normal(rec, "Verified", "Verify", "cache of dataset %s released: %s runs %d workers", rec.Spec.Dataset.Name, t, status)
	return ctrl.Result{}, nil
}

// profileFor finds the AccessProfile the recommendation was made from.
func (r *RecommendationReconciler) profileFor(ctx context.Context, rec *eddyv1alpha1.Recommendation) (*eddyv1alpha1.AccessProfile, error) {
	if name := rec.Spec.Evidence.Profile; name != "" {
		p := &eddyv1alpha1.AccessProfile{}
		err := r.Get(ctx, client.ObjectKey{Namespace: rec.Namespace, Name: name}, p)
		if err == nil {
			return p, nil
		}
		if client.IgnoreNotFound(err) != nil {
			return nil, fmt.Errorf("get AccessProfile %s/%s: %w", rec.Namespace, name, err)
		}
	}
	if rec.Spec.TargetRef == nil {
		return nil, nil
	}
	var list eddyv1alpha1.AccessProfileList
	if err := r.List(ctx, &list, client.InNamespace(rec.Namespace), client.MatchingFields{indexWorkload: rec.Spec.TargetRef.Key()}); err != nil {
		return nil, fmt.Errorf("list AccessProfiles of %s in %s: %w", rec.Spec.TargetRef.Key(), rec.Namespace, err)
	}
	for i := range list.Items {
		if list.Items[i].Spec.Dataset.Name == rec.Spec.Dataset.Name {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// restart rolls a pod-level recommendation out to the workload's running
// pods, within the workload's own rollout limits and PodDisruptionBudgets.
func (r *RecommendationReconciler) restart(ctx context.Context, rec *eddyv1alpha1.Recommendation, pol effectivePolicy) (ctrl.Result, error) {
	if err := r.heartbeat.check(ctx); err != nil {
		r.Recorder.warning(rec, "AnalyzerStale", "Restart", "%v", err)
		return ctrl.Result{RequeueAfter: r.Options.StaleRetry}, nil
	}
	w := workloadRestarter{client: r.Client, reader: r.APIReader}
	ref := *rec.Spec.TargetRef
	if pol.dryRun {
		return r.recordDryRun(ctx, rec, fmt.Sprintf("restart the pods of %s/%s", ref.Kind, ref.Name))
	}
	res, err := w.restart(ctx, rec.Namespace, ref, rec.Name, r.Options.Now())
	if err != nil {
		return ctrl.Result{}, err
	}
	status, requeue := metav1.ConditionTrue, time.Duration(0)
	switch res.outcome {
	case restartWaiting:
		status, requeue = metav1.ConditionUnknown, 15*time.Second
	case restartUnsupported:
		status = metav1.ConditionFalse
	}
	if setCondition(rec, eddyv1alpha1.ConditionRestarted, status, string(res.outcome), res.message) {
		if err := r.Status().Update(ctx, rec); err != nil {
			return ctrl.Result{}, fmt.Errorf("record restart of recommendation %s/%s: %w", rec.Namespace, rec.Name, err)
		}
		r.Recorder.normal(rec, string(res.outcome), "Restart", "%s", res.message)
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// rollback undoes an applied recommendation and marks it RolledBack.
func (r *RecommendationReconciler) rollback(ctx context.Context, rec *eddyv1alpha1.Recommendation, pol effectivePolicy, reason, why string) (ctrl.Result, error) {
	if err := r.heartbeat.check(ctx); err != nil {
		r.Recorder.warning(rec, "AnalyzerStale", "RollBack", "%v", err)
		return ctrl.Result{RequeueAfter: r.Options.StaleRetry}, nil
	}
	what := fmt.Sprintf("stop giving new pods of %s the %s", targetName(rec), rec.Spec.Action)
	var undo func() error
	switch rec.Spec.Action {
	case eddyv1alpha1.ActionScaleCache, eddyv1alpha1.ActionEvictDataset:
		var explicit *eddyv1alpha1.CacheTargetReference
		if rec.Spec.ScaleCache != nil {
			explicit = rec.Spec.ScaleCache.CacheTargetRef
		}
		t, err := r.scaler.targetFor(ctx, rec.Namespace, rec.Spec.Dataset, explicit)
		if err != nil {
			return r.fail(ctx, rec, "NoCacheTarget", "cannot roll back: "+err.Error())
		}
		prev, ok := previousReplicas(rec)
		if !ok {
			what = fmt.Sprintf("leave %s as it is (its replicas before were not recorded)", t)
			break
		}
		what = fmt.Sprintf("scale %s back to %d", t, prev)
		undo = func() error {
			if _, err := r.scaler.setReplicas(ctx, t, prev, nil); err != nil {
				return err
			}
			if rec.Spec.Action != eddyv1alpha1.ActionEvictDataset {
				return nil
			}
			return r.annotateDataset(ctx, rec.Namespace, rec.Spec.Dataset.Name, map[string]any{
				eddyv1alpha1.EvictedAtAnnotation: nil, eddyv1alpha1.EvictedByAnnotation: nil, eddyv1alpha1.EvictedReasonAnnotation: nil, eddyv1alpha1.ReplicasBeforeEvictionAnnotation: nil,
			})
		}
	}
	if pol.dryRun {
		return r.recordDryRun(ctx, rec, "roll back: "+what)
	}
	if undo != nil {
		if err := undo(); err != nil {
			return ctrl.Result{}, err
		}
	}
	rec.Status.Phase = eddyv1alpha1.PhaseRolledBack
	setCondition(rec, eddyv1alpha1.ConditionApplied, metav1.ConditionFalse, "RolledBack"+reason, fmt.Sprintf("%s: %s", why, what))
	if err := r.Status().Update(ctx, rec); err != nil {
		return ctrl.Result{}, fmt.Errorf("mark recommendation %s/%s RolledBack: %w", rec.Namespace, rec.Name, err)
	}
	r.Recorder.normal(rec, "RolledBack", "RollBack", "%s: %s", why, what)
	if rec.Spec.Action.PodLevel() && pol.rolloutRestart && rec.Spec.TargetRef != nil && rec.Spec.TargetRef.IsObject() {
		w := workloadRestarter{client: r.Client, reader: r.APIReader}
		res, err := w.restart(ctx, rec.Namespace, *rec.Spec.TargetRef, rec.Name+".rollback", r.Options.Now())
		if err != nil {
			return ctrl.Result{}, err
		}
		if res.outcome != restartDone {
			r.Recorder.normal(rec, string(res.outcome), "Restart", "pods keep it until they are next replaced: %s", res.message)
		}
	}
	return ctrl.Result{}, nil
}

// mergePatchAnnotations renders a JSON merge patch of metadata.annotations.
func mergePatchAnnotations(ann map[string]any) ([]byte, error) {
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return nil, fmt.Errorf("render annotation patch: %w", err)
	}
	return b, nil
}

// iBytes renders a byte amount for people, in binary units.
func iBytes(b float64) string { return humanize.IBytes(uint64(max(b, 0))) }
