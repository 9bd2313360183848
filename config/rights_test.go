package config_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/config"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

var update = flag.Bool("update", false, "rewrite testdata/rights.golden from the API server's answers")

const (
	system   = "eddy-system"
	optedIn  = "ml"
	notOpted = "kube-system"
)

// TestEffectiveRightsAreTheCommittedOnes applies config/ to a real API
// server and asks it (SelfSubjectRulesReview, as each service account) what
// each component may do in eddy-system, an opted-in namespace and
// kube-system, beyond what every authenticated user may. The answer must be
// testdata/rights.golden: a new verb, resource or wildcard fails here and
// is reviewed there (go test ./config -run EffectiveRights -update).
func TestEffectiveRightsAreTheCommittedOnes(t *testing.T) {
	env := startWithConfig(t)
	var b strings.Builder
	baseline := map[string]map[string]bool{}
	for _, ns := range []string{system, optedIn, notOpted} {
		baseline[ns] = rules(t, env, "system:serviceaccount:"+system+":nobody", ns)
	}
	for _, sa := range []string{"eddy-analyzer", "eddy-collector", "eddy-operator", "eddy-webhook"} {
		for _, ns := range []string{system, optedIn, notOpted} {
			fmt.Fprintf(&b, "# %s in %s\n", sa, ns)
			var lines []string
			for l := range rules(t, env, "system:serviceaccount:"+system+":"+sa, ns) {
				if baseline[ns][l] {
					continue
				}
				if strings.Contains(l, "*") {
					t.Errorf("%s in %s holds a wildcard: %s", sa, ns, l)
				}
				lines = append(lines, l)
			}
			sort.Strings(lines)
			for _, l := range lines {
				b.WriteString(l + "\n")
			}
		}
	}
	const golden = "testdata/rights.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("effective rights differ from %s (review, then -update):\n%s", golden, diff(string(want), got))
	}
}

// TestWritesStayInOptedInNamespaces makes the writes the issue showed, as
// each service account, through admission (dry run): the operator patching
// a Deployment and the analyzer creating a profile are refused in
// kube-system and accepted in an opted-in namespace; the webhook reads no
// Secret but its own and creates no pod.
func TestWritesStayInOptedInNamespaces(t *testing.T) {
	env := startWithConfig(t)
	ctx := context.Background()
	for _, ns := range []string{optedIn, notOpted} {
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: ns},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To(int32(1)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "payments"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "payments"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
				},
			},
		}
		if err := env.Client.Create(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: system}}
	if err := env.Client.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	dry := []string{metav1.DryRunAll}
	patch := []byte(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"now"}}}}}`)

	operator := clientsetAs(t, env, "eddy-operator")
	for ns, allowed := range map[string]bool{optedIn: true, notOpted: false} {
		_, err := operator.AppsV1().Deployments(ns).Patch(ctx, "payments", types.StrategicMergePatchType, patch, metav1.PatchOptions{DryRun: dry})
		expect(t, "eddy-operator patches Deployment "+ns+"/payments", err, allowed)
		sc := &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 30}}
		_, err = operator.AppsV1().Deployments(ns).UpdateScale(ctx, "payments", sc, metav1.UpdateOptions{DryRun: dry})
		expect(t, "eddy-operator scales Deployment "+ns+"/payments", err, allowed)
	}

	analyzer := controllerClientAs(t, env, "eddy-analyzer")
	for ns, allowed := range map[string]bool{optedIn: true, notOpted: false} {
		p := &eddyv1alpha1.AccessProfile{
			ObjectMeta: metav1.ObjectMeta{Name: "forged", Namespace: ns},
			Spec: eddyv1alpha1.AccessProfileSpec{
				WorkloadRef: eddyv1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "coredns"},
				Dataset:     eddyv1alpha1.DatasetReference{Name: "d"},
			},
		}
		err := analyzer.Create(ctx, p, client.DryRunAll)
		expect(t, "eddy-analyzer creates an AccessProfile in "+ns, err, allowed)
	}

	webhook := clientsetAs(t, env, "eddy-webhook")
	_, err := webhook.CoreV1().Secrets(system).Get(ctx, "eddy-webhook-certs", metav1.GetOptions{})
	expect(t, "eddy-webhook reads its certificate Secret", err, true)
	_, err = webhook.CoreV1().Secrets(system).Get(ctx, "other", metav1.GetOptions{})
	expect(t, "eddy-webhook reads another Secret", err, false)
	_, err = webhook.CoreV1().Secrets(system).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: system}}, metav1.CreateOptions{DryRun: dry})
	expect(t, "eddy-webhook creates a Secret", err, false)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "escape", Namespace: system},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x", SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}},
			Volumes: []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}},
	}
	for _, sa := range []string{"eddy-webhook", "eddy-operator", "eddy-analyzer", "eddy-collector"} {
		_, err = clientsetAs(t, env, sa).CoreV1().Pods(system).Create(ctx, pod, metav1.CreateOptions{DryRun: dry})
		expect(t, sa+" creates a privileged hostPath pod in "+system, err, false)
	}
}

func expect(t *testing.T, what string, err error, allowed bool) {
	t.Helper()
	switch {
	case allowed && err != nil:
		t.Errorf("%s: refused, want allowed: %v", what, err)
	case !allowed && err == nil:
		t.Errorf("%s: allowed, want refused", what)
	case !allowed && !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err):
		t.Errorf("%s: %v, want Forbidden", what, err)
	}
}

func startWithConfig(t *testing.T) *controlplane.Env {
	t.Helper()
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	env, err := controlplane.Start(context.Background(), controlplane.Options{})
	if err != nil {
		t.Fatalf("control plane: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	objs, err := config.Deployment()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "Deployment" || o.GetKind() == "DaemonSet" {
			continue
		}
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: optedIn, Labels: map[string]string{eddyv1alpha1.AutotuneLabel: eddyv1alpha1.AutotuneEnabled}}}
	if err := env.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	// The API server starts enforcing a new admission policy a moment after
	// it is created: wait until it refuses an operator's event in
	// kube-system (which RBAC allows).
	operator := clientsetAs(t, env, "eddy-operator")
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: notOpted},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "p", Namespace: notOpted}, Reason: "Probe"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := operator.CoreV1().Events(notOpted).Create(ctx, ev, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if apierrors.IsForbidden(err) {
			return env
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admission policy does not refuse the operator's writes in %s: %v", notOpted, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func configAs(env *controlplane.Env, sa string) *rest.Config {
	cfg := rest.CopyConfig(env.Config)
	user := sa
	if !strings.HasPrefix(sa, "system:") {
		user = "system:serviceaccount:" + system + ":" + sa
	}
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + system, "system:authenticated"}}
	return cfg
}

func clientsetAs(t *testing.T, env *controlplane.Env, sa string) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(configAs(env, sa))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func controllerClientAs(t *testing.T, env *controlplane.Env, sa string) client.Client {
	t.Helper()
	c, err := client.New(configAs(env, sa), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rules is what user may do in ns, one line per group, resource and names
// with the verbs allowed on them.
func rules(t *testing.T, env *controlplane.Env, user, ns string) map[string]bool {
	t.Helper()
	review, err := clientsetAs(t, env, user).AuthorizationV1().SelfSubjectRulesReviews().Create(context.Background(),
		&authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("rules review of %s in %s: %v", user, ns, err)
	}
	verbs := map[string][]string{}
	for _, r := range review.Status.ResourceRules {
		names := slices.Clone(r.ResourceNames)
		sort.Strings(names)
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := fmt.Sprintf("%s %s", groupName(g), res)
				if len(names) > 0 {
					k += " [" + strings.Join(names, ",") + "]"
				}
				verbs[k] = append(verbs[k], r.Verbs...)
			}
		}
	}
	out := map[string]bool{}
	for k, v := range verbs {
		sort.Strings(v)
		out[k+": "+strings.Join(slices.Compact(v), ",")] = true
	}
	for _, r := range review.Status.NonResourceRules {
		for _, u := range r.NonResourceURLs {
			v := slices.Clone(r.Verbs)
			sort.Strings(v)
			out["url "+u+": "+strings.Join(v, ",")] = true
		}
	}
	return out
}

func groupName(g string) string {
	if g == "" {
		return "core"
	}
	return g
}

func diff(want, got string) string {
	w, g := map[string]bool{}, map[string]bool{}
	for _, l := range strings.Split(want, "\n") {
		w[l] = true
	}
	for _, l := range strings.Split(got, "\n") {
		g[l] = true
	}
	var b strings.Builder
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	return b.String()
}
