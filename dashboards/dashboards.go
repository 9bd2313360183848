package dashboards

// Selectors of the templated dashboards.
const (
	ns  = `namespace=~"$namespace"`
	wl  = `namespace=~"$namespace", workload=~"$workload"`
	wld = `namespace=~"$namespace", workload=~"$workload", dataset=~"$dataset"`
)

var (
	namespaceVar = Variable{Name: "namespace", Label: "Namespace", Query: "label_values(eddy_operator_profile_info, namespace)"}
	workloadVar  = Variable{Name: "workload", Label: "Workload", Query: `label_values(eddy_operator_profile_info{namespace=~"$namespace"}, workload)`}
	datasetVar   = Variable{Name: "dataset", Label: "Dataset", Query: `label_values(eddy_operator_profile_info{namespace=~"$namespace", workload=~"$workload"}, dataset)`}
)

// Dashboards returns eddy's dashboards: Overview, Workload, Cache & datasets
// and eddy itself.
func Dashboards() []Dashboard {
	return []Dashboard{overview(), workload(), cache(), self()}
}

func overview() Dashboard {
	return Dashboard{
		UID: "eddy-overview", Title: "eddy / Overview",
		Description: "What eddy sees across opted-in namespaces and what it changed.",
		Variables:   []Variable{namespaceVar},
		Rows: []Row{{Title: "What eddy sees", Panels: []Panel{
			{Title: "Opted-in namespaces", Kind: Stat, Unit: "short",
				Description: "Namespaces labelled eddy.io/autotune=enabled. Zero: nothing is learned; label a namespace to opt it in.",
				Queries:     []Query{{Expr: `max(eddy_operator_opted_in_namespaces)`, Legend: "namespaces"}}},
			{Title: "Workloads by access class", Kind: Stat, Unit: "short",
				Description: "Workload × dataset pairs by the class the analyzer assigned. Many Unknown: runs are too short or too few to classify yet.",
				Queries:     []Query{{Expr: `count by (class) (eddy_operator_profile_info{` + ns + `})`, Legend: "{{class}}"}}},
			{Title: "Share of wall time waiting on data", Unit: "percentunit",
				Description: "Read wait share per workload and dataset (from its profile). High and no recommendation: see the EddyDataStallWithoutRecommendation runbook.",
				Queries:     []Query{{Expr: `max by (namespace, workload, dataset) (eddy_operator_profile_read_wait_ratio{` + ns + `})`, Legend: "{{namespace}}/{{workload}} {{dataset}}"}}},
			{Title: "Bytes read", Unit: "Bps",
				Description: "Read throughput of observed containers by workload and dataset (recording rule of the collector's counters). Flat zero while jobs run: the collector does not observe them.",
				Queries:     []Query{{Expr: `sum by (namespace, workload, dataset) (namespace_workload_dataset:eddy_collector_read_bytes:rate5m{` + ns + `})`, Legend: "{{namespace}}/{{workload}} {{dataset}}"}}},
			{Title: "Page-cache miss ratio", Unit: "percentunit",
				Description: "Share of read pages that were not cached. High for a dataset read more than once: the cache is too small or evicted between runs.",
				Queries:     []Query{{Expr: `max by (namespace, workload, dataset) (eddy_operator_profile_page_cache_miss_ratio{` + ns + `})`, Legend: "{{namespace}}/{{workload}} {{dataset}}"}}},
		}}, {Title: "What eddy did", Panels: []Panel{
			{Title: "Recommendations by phase", Kind: Stat, Unit: "short",
				Description: "Proposed ones wait for a reviewer (kubectl eddy review); Ineffective ones wait for a rollback; RolledBack ones did not help.",
				Queries:     []Query{{Expr: `sum by (phase) (eddy_operator_recommendations{` + ns + `})`, Legend: "{{phase}}"}}},
			{Title: "Read wait before and after applied changes", Unit: "percentunit",
				Description: "For each recommendation in force: read wait share before (its evidence) and measured after (verification). After not below before: the change did not help and will be (or should be) rolled back.",
				Queries: []Query{
					{Expr: `max by (namespace, workload, action) (eddy_operator_recommendation_read_wait_ratio{basis="before", ` + ns + `})`, Legend: "before {{namespace}}/{{workload}} {{action}}"},
					{Expr: `max by (namespace, workload, action) (eddy_operator_recommendation_read_wait_ratio{basis="measured", ` + ns + `})`, Legend: "after {{namespace}}/{{workload}} {{action}}"},
				}},
			{Title: "Operator actions", Unit: "short",
				Description: "What the operator did in the last hour, by step and reason. AnalyzerStale or BudgetExhausted: it wanted to act and was held back.",
				Queries:     []Query{{Expr: `sum by (step, reason) (increase(eddy_operator_actions_total[1h]))`, Legend: "{{step}} {{reason}}"}}},
		}}},
	}
}

func workload() Dashboard {
	return Dashboard{
		UID: "eddy-workload", Title: "eddy / Workload",
		Description: "One workload × dataset over time: how it reads, what eddy concluded and what it changed.",
		Variables:   []Variable{namespaceVar, workloadVar, datasetVar},
		Rows: []Row{{Title: "How it reads", Panels: []Panel{
			{Title: "Read throughput by pod", Unit: "Bps",
				Description: "Bytes read per second by each pod of the workload. Lower in a run after a change than before: check the recommendation's verification.",
				Queries:     []Query{{Expr: `sum by (pod) (rate(eddy_collector_read_bytes_total{` + wld + `}[$__rate_interval]))`, Legend: "{{pod}}"}}},
			{Title: "Mean read size", Unit: "bytes",
				Description: "Bytes per read call. Small reads from a remote store are slow; a prefetcher or larger reads help.",
				Queries: []Query{{Expr: `sum by (pod) (rate(eddy_collector_read_bytes_total{` + wld + `}[$__rate_interval])) / sum by (pod) (rate(eddy_collector_read_operations_total{` + wld + `}[$__rate_interval]))`,
					Legend: "{{pod}}"}}},
			{Title: "Sequential reads", Unit: "percentunit",
				Description: "Share of reads that continued the previous read of the same file. Near 1: sequential read-ahead fits; near 0: random reads, do not prefetch whole files.",
				Queries: []Query{{Expr: `sum by (pod) (rate(eddy_collector_read_steps_total{pattern="sequential", ` + wld + `}[$__rate_interval])) / sum by (pod) (rate(eddy_collector_read_steps_total{` + wld + `}[$__rate_interval]))`,
					Legend: "{{pod}}"}}},
			{Title: "Mean read latency", Unit: "s",
				Description: "Time per read call (time in read calls over calls; the collector exports no latency histogram, so no percentiles here). Rising: the store or the cache is the bottleneck.",
				Queries: []Query{{Expr: `sum by (pod) (rate(eddy_collector_read_wait_seconds_total{` + wld + `}[$__rate_interval])) / sum by (pod) (rate(eddy_collector_read_operations_total{` + wld + `}[$__rate_interval]))`,
					Legend: "{{pod}}"}}},
			{Title: "Time in reads", Unit: "percentunit",
				Description: "Seconds spent in read calls per second of wall time, per pod (above 1 when several threads read). High: the workload waits on data.",
				Queries:     []Query{{Expr: `sum by (pod) (rate(eddy_collector_read_wait_seconds_total{` + wld + `}[$__rate_interval]))`, Legend: "{{pod}}"}}},
		}}, {Title: "What eddy concluded and did", Panels: []Panel{
			{Title: "Class and confidence", Unit: "percentunit",
				Description: "The confidence of the class in the legend. A class that keeps changing: the workload is not stable enough to act on; raise minConfidence.",
				Queries: []Query{{Expr: `max by (namespace, workload, dataset) (eddy_operator_profile_confidence_ratio{` + wld + `}) * on (namespace, workload, dataset) group_left (class) max by (namespace, workload, dataset, class) (eddy_operator_profile_info{` + wld + `})`,
					Legend: "{{class}} {{dataset}}"}}},
			{Title: "Read wait share (profile)", Unit: "percentunit",
				Description: "Share of wall time the workload waited on the dataset, from its decayed profile.",
				Queries:     []Query{{Expr: `max by (dataset) (eddy_operator_profile_read_wait_ratio{` + wld + `})`, Legend: "{{dataset}}"}}},
			{Title: "Its recommendations", Unit: "short",
				Description: "Recommendations of this workload not yet final, by action. One that stays for long: nobody reviewed it (kubectl eddy review).",
				Queries:     []Query{{Expr: `sum by (action) (eddy_operator_open_recommendations{` + wld + `})`, Legend: "{{action}}"}}},
			{Title: "Prefetch warm-up", Unit: "percentunit",
				Description: "Share of the planned bytes each injected prefetcher has read (by pod). Stuck below 1: the store is slow or the budget is too small.",
				Queries:     []Query{{Expr: `max by (pod) (eddy_prefetch_warm_ratio{` + ns + `})`, Legend: "{{pod}}"}}},
			{Title: "Prefetch planned bytes", Unit: "bytes",
				Description: "Bytes each prefetcher plans to read (its selection); the warm-up is measured against it.",
				Queries:     []Query{{Expr: `max by (pod) (eddy_prefetch_selection_bytes{` + ns + `})`, Legend: "{{pod}}"}}},
		}}},
	}
}

func cache() Dashboard {
	return Dashboard{
		UID: "eddy-cache", Title: "eddy / Cache & datasets",
		Description: "Datasets: their working sets, cache workers eddy set, idle ones and evictions.",
		Variables:   []Variable{namespaceVar},
		Rows: []Row{{Title: "Datasets", Panels: []Panel{
			{Title: "Working set by dataset", Unit: "bytes",
				Description: "Bytes of each dataset its readers read. Larger than the cache: expect misses; a ScaleCache recommendation sizes workers for it.",
				Queries:     []Query{{Expr: `max by (namespace, dataset) (eddy_operator_profile_working_set_bytes{` + ns + `})`, Legend: "{{namespace}}/{{dataset}}"}}},
			{Title: "Cache workers set by eddy", Unit: "short",
				Description: "Cache workers of each dataset under a ScaleCache recommendation in force.",
				Queries:     []Query{{Expr: `max by (namespace, dataset) (eddy_operator_recommendation_cache_workers{` + ns + `})`, Legend: "{{namespace}}/{{dataset}}"}}},
			{Title: "Time since last read", Unit: "s",
				Description: "How long ago each dataset was last read. Past the policy's idleAfter with no pod using it: eddy proposes an eviction.",
				Queries:     []Query{{Expr: `time() - max by (namespace, dataset) (eddy_operator_profile_last_seen_timestamp_seconds{` + ns + `})`, Legend: "{{namespace}}/{{dataset}}"}}},
			{Title: "Evictions and restores", Unit: "short",
				Description: "Idle datasets proposed for eviction, evicted, blocked and restored in the last hour. Warnings (DatasetInUse, NoCacheTarget): see the EddyEvictionBlocked runbook.",
				Queries:     []Query{{Expr: `sum by (step, reason) (increase(eddy_operator_actions_total{step=~"ProposeEviction|RestoreCache|Apply|Verify", action=~"EvictDataset|"}[1h]))`, Legend: "{{step}} {{reason}}"}}},
			{Title: "Recommendations by action", Kind: Stat, Unit: "short",
				Description: "All recommendations by action; cache actions are ScaleCache and EvictDataset.",
				Queries:     []Query{{Expr: `sum by (action) (eddy_operator_recommendations{` + ns + `})`, Legend: "{{action}}"}}},
		}}},
	}
}

func self() Dashboard {
	return Dashboard{
		UID: "eddy-self", Title: "eddy / eddy itself",
		Description: "The health of eddy's collector, analyzer, webhook and operator.",
		Rows: []Row{{Title: "Collector", Panels: []Panel{
			{Title: "Events lost", Unit: "short",
				Description: "Kernel file events lost per second (their files have no path). Sustained: see the EddyCollectorLosingEvents runbook.",
				Queries:     []Query{{Expr: `sum by (instance) (rate(eddy_collector_events_lost_total[$__rate_interval]))`, Legend: "{{instance}}"}}},
			{Title: "Kernel map fill", Unit: "percentunit",
				Description: "Entries in the per-file map over its capacity at the last drain. Near 1: updates are refused (map full); shorten the drain interval.",
				Queries:     []Query{{Expr: `max by (instance) (eddy_collector_map_fill_ratio)`, Legend: "{{instance}}"}}},
			{Title: "Drain time p99", Unit: "s",
				Description: "Time to drain the kernel maps and assemble a window. Close to the drain interval: the node has too much to drain.",
				Queries:     []Query{{Expr: `histogram_quantile(0.99, sum by (le, instance) (rate(eddy_collector_drain_duration_seconds_bucket[$__rate_interval])))`, Legend: "{{instance}}"}}},
			{Title: "Held and unattributed records", Unit: "short",
				Description: "Records held for a container not yet known, and records of no observed container per second. Growing held records: the kubelet's status lags.",
				Queries: []Query{
					{Expr: `sum by (instance) (eddy_collector_held_records)`, Legend: "held {{instance}}"},
					{Expr: `sum by (instance) (rate(eddy_collector_unattributed_records_total[$__rate_interval]))`, Legend: "unattributed/s {{instance}}"},
				}},
			{Title: "Windows buffered", Unit: "short",
				Description: "Windows not yet acknowledged by the analyzer. Growing: the analyzer is unreachable or slow.",
				Queries:     []Query{{Expr: `sum by (instance) (eddy_collector_windows_buffered)`, Legend: "{{instance}}"}}},
			{Title: "Programs attached", Unit: "short",
				Description: "eBPF programs attached per node. At rest (no observed container on the node) only the cgroup and thread-exit hooks: the node's reads pay nothing; more while eddy observes a pod there.",
				Queries:     []Query{{Expr: `max by (instance) (eddy_collector_programs_attached)`, Legend: "{{instance}}"}}},
			{Title: "Kernel program cost", Unit: "percentunit",
				Description: "CPU time the kernel spends in each eBPF program (only with kernel.bpf_stats_enabled=1).",
				Queries:     []Query{{Expr: `sum by (program) (rate(eddy_collector_bpf_run_time_seconds_total[$__rate_interval]))`, Legend: "{{program}}"}}},
		}}, {Title: "Analyzer", Panels: []Panel{
			{Title: "Windows received", Unit: "short",
				Description: "Windows per second from collectors, by result. Zero while collectors run: they cannot reach or authenticate to the analyzer.",
				Queries:     []Query{{Expr: `sum by (result) (rate(eddy_analyzer_windows_total[$__rate_interval]))`, Legend: "{{result}}"}}},
			{Title: "Intake lag p90", Unit: "s",
				Description: "Time from the end of a window on its node to its application. Growing: collectors buffer; check the analyzer's CPU and the collectors' ship failures.",
				Queries:     []Query{{Expr: `histogram_quantile(0.9, sum by (le) (rate(eddy_analyzer_window_lag_seconds_bucket[$__rate_interval])))`, Legend: "p90"}}},
			{Title: "Analyzer heartbeat age", Unit: "s",
				Description: "Seconds since the analyzer renewed its heartbeat Lease, as the operator sees it. Past the stale-after, the operator stops acting: see EddyAnalyzerHeartbeatStale.",
				Queries:     []Query{{Expr: `max(eddy_operator_analyzer_heartbeat_age_seconds)`, Legend: "age"}}},
			{Title: "Records rejected", Unit: "short",
				Description: "Records not taken from collectors per second, by reason. Any other_node or unknown_pod: a collector reports what it may not.",
				Queries:     []Query{{Expr: `sum by (reason) (rate(eddy_analyzer_rejected_records_total[$__rate_interval]))`, Legend: "{{reason}}"}}},
		}}, {Title: "Webhook", Panels: []Panel{
			{Title: "Admission latency p99", Unit: "s",
				Description: "Time to answer an admission request. Near the webhook's timeout: pods are admitted uninjected (fail-open).",
				Queries:     []Query{{Expr: `webhook:eddy_webhook_request_duration_seconds:p99_5m`, Legend: "{{webhook}}"}}},
			{Title: "Injections and skips", Unit: "short",
				Description: "Pods injected per second by what, and skips by reason. Many skips for one reason: a policy or a pod's settings stop injection.",
				Queries: []Query{
					{Expr: `sum by (what) (rate(eddy_webhook_injections_total[$__rate_interval]))`, Legend: "injected {{what}}"},
					{Expr: `sum by (reason) (rate(eddy_webhook_skips_total[$__rate_interval]))`, Legend: "skipped {{reason}}"},
				}},
			{Title: "Webhook errors", Unit: "short",
				Description: "Internal errors per second by webhook and stage; each pod was admitted unchanged. See EddyWebhookErrors.",
				Queries:     []Query{{Expr: `sum by (webhook, stage) (rate(eddy_webhook_errors_total[$__rate_interval]))`, Legend: "{{webhook}} {{stage}}"}}},
			{Title: "Uninjected pods", Kind: Stat, Unit: "short",
				Description: "Pods that should carry an injection and do not (admitted while the webhook was down or slow). See EddyUninjectedPods.",
				Queries:     []Query{{Expr: `max(eddy_webhook_uninjected_pods)`, Legend: "pods"}}},
		}}, {Title: "Operator", Panels: []Panel{
			{Title: "Reconcile errors", Unit: "short",
				Description: "Reconcile errors per second by controller. Sustained: read the operator's log and the objects' events.",
				Queries:     []Query{{Expr: `sum by (controller) (rate(controller_runtime_reconcile_errors_total[$__rate_interval]))`, Legend: "{{controller}}"}}},
			{Title: "Actions", Unit: "short",
				Description: "Operator actions per second by step and reason.",
				Queries:     []Query{{Expr: `sum by (step, reason) (rate(eddy_operator_actions_total[$__rate_interval]))`, Legend: "{{step}} {{reason}}"}}},
			{Title: "Blocked by a stale analyzer", Unit: "short",
				Description: "Actions held back in the last hour because the analyzer's heartbeat was stale. Non-zero: see EddyAnalyzerHeartbeatStale.",
				Queries:     []Query{{Expr: `sum by (step) (increase(eddy_operator_actions_total{reason="AnalyzerStale"}[1h]))`, Legend: "{{step}}"}}},
			{Title: "Change budget in use", Unit: "percentunit",
				Description: "Changes applied in the policy's interval over the changes it allows, per namespace. At 1: auto-approval waits for the next slot.",
				Queries:     []Query{{Expr: `max by (namespace) (eddy_operator_change_budget_used) / max by (namespace) (eddy_operator_change_budget_max)`, Legend: "{{namespace}}"}}},
		}}},
	}
}
