package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/kubectlplugin"
	"github.com/eddy-autotune/eddy/operator"
)

// The review commands: `kubectl eddy X` when the binary is installed as
// kubectl-eddy, `eddy X` otherwise.
func init() {
	rootCmd.AddCommand(newRecommendationsCmd(), newDecisionCmd(true), newDecisionCmd(false), newExplainCmd(), newStatusCmd())
}

// kubeFlags are the connection flags every review command takes.
type kubeFlags struct {
	kubeconfig    string
	context       string
	namespace     string
	allNamespaces bool
}

func (k *kubeFlags) register(cmd *cobra.Command, allNamespaces bool) {
	f := cmd.Flags()
	f.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&k.context, "context", "", "kubeconfig context (default: the current one)")
	f.StringVarP(&k.namespace, "namespace", "n", "", "namespace (default: the context's)")
	if allNamespaces {
		f.BoolVarP(&k.allNamespaces, "all-namespaces", "A", false, "every namespace")
	}
}

// client connects and returns the namespace to work in ("" with -A).
func (k *kubeFlags) client() (client.Client, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = k.kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("no Kubernetes configuration (--kubeconfig, $KUBECONFIG or ~/.kube/config): %w", err)
	}
	cfg.Timeout = 30 * time.Second
	c, err := client.New(cfg, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		return nil, "", fmt.Errorf("connect to %s: %w", cfg.Host, err)
	}
	ns := k.namespace
	switch {
	case k.allNamespaces:
		ns = ""
	case ns == "":
		if ns, _, err = cc.Namespace(); err != nil {
			return nil, "", fmt.Errorf("namespace of the kubeconfig context: %w", err)
		}
	}
	return c, ns, nil
}

func newRecommendationsCmd() *cobra.Command {
	var (
		k   kubeFlags
		all bool
	)
	cmd := &cobra.Command{
		Use:     "recommendations",
		Aliases: []string{"recs", "rec"},
		Short:   "Review recommendations: what each changes, its evidence, what it expects, where it stands",
		Long: `List recommendations as a review table: the action and the change it makes,
the workload and dataset, the access class and confidence, the evidence it
was made on (read-wait share of wall time, throughput, working set,
sequential share), the expected benefit (or the measured outcome once
verified), and its phase. Open ones only, unless --all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ns, err := k.client()
			if err != nil {
				return err
			}
			return kubectlplugin.Recommendations(cmd.Context(), c, cmd.OutOrStdout(), kubectlplugin.ListOptions{Namespace: ns, All: all})
		},
	}
	k.register(cmd, true)
	cmd.Flags().BoolVar(&all, "all", false, "include closed recommendations (Verified, Rejected, Superseded, Expired, Failed, RolledBack)")
	return cmd
}

func newDecisionCmd(approve bool) *cobra.Command {
	var (
		k   kubeFlags
		msg string
	)
	verb, done, short, def := "reject", "rejected", "Reject a recommendation (an applied one is rolled back)", "rejected with kubectl eddy"
	if approve {
		verb, done, short, def = "approve", "approved", "Approve a Proposed recommendation so the operator applies it", "approved with kubectl eddy"
	}
	cmd := &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Long: short + `.

The decision is a condition (Approved or Denied) written through the
Recommendation's status subresource; eddy's approval webhook admits it only
from users allowed the 'approve' verb on recommendations.eddy.io.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := k.client()
			if err != nil {
				return err
			}
			decide := kubectlplugin.Reject
			if approve {
				decide = kubectlplugin.Approve
			}
			rec, err := decide(cmd.Context(), c, ns, args[0], msg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "recommendation %s/%s %s (%s %s for dataset %s)\n", ns, rec.Name, done, rec.Spec.Action, targetOf(rec.Spec.TargetRef), rec.Spec.Dataset.Name)
			return nil
		},
	}
	k.register(cmd, false)
	cmd.Flags().StringVarP(&msg, "message", "m", def, "why, recorded in the condition's message")
	return cmd
}

func newExplainCmd() *cobra.Command {
	var k kubeFlags
	cmd := &cobra.Command{
		Use:   "explain WORKLOAD",
		Short: "Explain a workload: its access profile, class, the deciding features, what was applied and whether it helped",
		Long: `Explain what eddy saw of a workload (Kind/name, e.g. Job/train, or just the
name): for each dataset it reads, the access class and confidence, the
measured features, the rules that decided the class, and every
recommendation made for it with its phase and measured outcome.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := k.client()
			if err != nil {
				return err
			}
			return kubectlplugin.Explain(cmd.Context(), c, cmd.OutOrStdout(), ns, args[0])
		},
	}
	k.register(cmd, false)
	return cmd
}

func newStatusCmd() *cobra.Command {
	var (
		k     kubeFlags
		opNS  string
		lease string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the analyzer's heartbeat and, per namespace, the policy, change budget, recommendations, profiles and evicted datasets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ns, err := k.client()
			if err != nil {
				return err
			}
			return kubectlplugin.Status(cmd.Context(), c, cmd.OutOrStdout(), kubectlplugin.StatusOptions{Namespace: ns, OperatorNamespace: opNS, AnalyzerLease: lease})
		},
	}
	k.register(cmd, true)
	cmd.Flags().StringVar(&opNS, "operator-namespace", "eddy-system", "namespace of the analyzer's heartbeat Lease")
	cmd.Flags().StringVar(&lease, "analyzer-lease", eddyv1alpha1.AnalyzerHeartbeatLease, "name of the analyzer's heartbeat Lease")
	return cmd
}

func targetOf(ref *eddyv1alpha1.WorkloadReference) string {
	if ref == nil {
		return "(no workload)"
	}
	return ref.Kind + "/" + ref.Name
}
