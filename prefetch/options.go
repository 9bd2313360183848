// Package prefetch is the program the admission webhook injects into pods
// (`eddy prefetch`): it reads a dataset ahead of the application through the
// pod's own dataset mounts, with the strategy and numbers a Recommendation
// carries.
//
// Strategies decide the order: WholeDataset reads everything under the roots
// (or the manifest's files) in parallel; Sequential reads in first-access
// order (the manifest's, else lexical) with a window of reads in flight that
// starts at one block and doubles; Ordered follows the manifest's exact
// order and, per epoch, the SDK's hints (see Hint); HotSet reads the
// manifest's hot files, hottest first; Ranges reads only the byte ranges
// the manifest lists of each file (what the latest run read at random
// offsets), as many at a time as the concurrency allows; Resident reads
// whole files in the manifest's (else lexical) order while they fit the
// budget, then keeps them in a least-recently-used cache by opening each and
// reading its first byte every ResidentInterval until stopped. Hints reorder
// the queue of any strategy.
//
// Whatever the strategy, reads are at most BlockSize bytes, pass through a
// token bucket (MaxBandwidth), stop at BudgetBytes, and run with a
// concurrency that adapts to the remote (see adaptive). Files are opened
// through os.Root, beneath their root: a manifest or hint path that leads
// outside the roots, by "..", an absolute path elsewhere or a symbolic link,
// is rejected and logged, never read.
package prefetch

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Well-known locations inside an injected pod, shared by the webhook (which
// creates the volumes and mounts) and the prefetcher and SDK (which use them).
const (
	// DataMountRoot is where the webhook mounts each dataset volume into the
	// prefetch sidecar, read-only: DataMountRoot/<volume name>.
	DataMountRoot = "/eddy/data"
	// SDKMountPath is the emptyDir shared by the SDK init container, the
	// application containers and the prefetcher.
	SDKMountPath = "/eddy/sdk"
	// HintSocketName is the unix socket, under SDKMountPath, on which the
	// prefetcher receives read-order hints from the SDK.
	HintSocketName = "prefetch.sock"
	// StatusPort serves /status (JSON progress), /warm (200 once the warm
	// threshold is reached: the startup probe) and /metrics.
	StatusPort = 9471
)

// Options are the prefetcher's parameters. Args renders them as the
// command-line flags `eddy prefetch` parses, so the webhook and the program
// cannot disagree on spelling.
type Options struct {
	// Strategy is WholeDataset, Sequential, Ordered, HotSet, Ranges or Resident.
	Strategy v1alpha1.PrefetchStrategy
	// Roots are the dataset mount points the prefetcher may read under;
	// nothing outside them is ever read.
	Roots []string
	// BlockSize is the size of each read, in bytes.
	BlockSize int64
	// Concurrency is the starting number of reads in flight; it adapts.
	Concurrency int
	// MaxBandwidth caps the read rate in bytes per second (0: no cap).
	MaxBandwidth int64
	// BudgetBytes caps the bytes read ahead (0: no cap).
	BudgetBytes int64
	// WarmThresholdPercent is the share of the selection that must be warm
	// before /warm answers 200 (0: at once).
	WarmThresholdPercent int
	// ManifestURL is where the ordered file list (or hot set) is fetched from.
	ManifestURL string
	// HintSocket is the unix socket path for SDK hints ("" disables it).
	HintSocket string
	// StatusAddr is the listen address of the status server.
	StatusAddr string
	// Interval between progress reports in the log.
	ReportInterval time.Duration
	// MaxConcurrency bounds the adaptive concurrency (0: the larger of 64
	// and 4 × Concurrency).
	MaxConcurrency int
	// PathAliases map a path as the application containers see it to the
	// root the prefetcher sees it under, as "APP_PATH=ROOT" (for example
	// "/data/train=/eddy/data/train"), so SDK hints, which carry the
	// application's paths, can be followed. ROOT must be one of Roots.
	PathAliases []string
	// ResidentInterval is how often Resident touches the files it keeps (0:
	// DefaultResidentInterval). It must be shorter than the interval at
	// which the cache evicts (rclone's --vfs-cache-poll-interval).
	ResidentInterval time.Duration
	// ServiceAccountDir holds the token and ca.crt sent and trusted when
	// fetching the manifest ("": where Kubernetes mounts the pod's service
	// account). Set it only to run the prefetcher outside a pod, as the
	// demo does on its host.
	ServiceAccountDir string
}

// Args returns the flags for `eddy prefetch`, zero values omitted.
func (o Options) Args() []string {
	args := []string{"prefetch", "--strategy=" + string(o.Strategy)}
	for _, r := range o.Roots {
		args = append(args, "--root="+r)
	}
	add := func(name string, v int64) {
		if v != 0 {
			args = append(args, "--"+name+"="+strconv.FormatInt(v, 10))
		}
	}
	add("block-size", o.BlockSize)
	add("concurrency", int64(o.Concurrency))
	add("max-bandwidth", o.MaxBandwidth)
	add("budget", o.BudgetBytes)
	add("warm-threshold", int64(o.WarmThresholdPercent))
	if o.ManifestURL != "" {
		args = append(args, "--manifest-url="+o.ManifestURL)
	}
	if o.HintSocket != "" {
		args = append(args, "--hint-socket="+o.HintSocket)
	}
	if o.StatusAddr != "" {
		args = append(args, "--status-addr="+o.StatusAddr)
	}
	if o.ReportInterval != 0 {
		args = append(args, "--report-interval="+o.ReportInterval.String())
	}
	if o.ResidentInterval != 0 {
		args = append(args, "--resident-interval="+o.ResidentInterval.String())
	}
	add("max-concurrency", int64(o.MaxConcurrency))
	for _, a := range o.PathAliases {
		args = append(args, "--path-alias="+a)
	}
	if o.ServiceAccountDir != "" {
		args = append(args, "--service-account-dir="+o.ServiceAccountDir)
	}
	return args
}

// Validate reports the first problem with o, naming the flag.
func (o Options) Validate() error {
	switch o.Strategy {
	case v1alpha1.StrategyWholeDataset, v1alpha1.StrategySequential, v1alpha1.StrategyOrdered, v1alpha1.StrategyHotSet, v1alpha1.StrategyRanges, v1alpha1.StrategyResident:
	default:
		return fmt.Errorf("--strategy %q: want one of WholeDataset, Sequential, Ordered, HotSet, Ranges, Resident", o.Strategy)
	}
	if len(o.Roots) == 0 {
		return fmt.Errorf("--root: at least one dataset mount is required")
	}
	for _, r := range o.Roots {
		if !strings.HasPrefix(r, "/") {
			return fmt.Errorf("--root %q: must be an absolute path", r)
		}
	}
	if o.BlockSize < 0 || o.Concurrency < 0 || o.MaxBandwidth < 0 || o.BudgetBytes < 0 {
		return fmt.Errorf("--block-size, --concurrency, --max-bandwidth and --budget must not be negative")
	}
	if o.WarmThresholdPercent < 0 || o.WarmThresholdPercent > 100 {
		return fmt.Errorf("--warm-threshold %d: want 0..100", o.WarmThresholdPercent)
	}
	if o.MaxConcurrency < 0 {
		return fmt.Errorf("--max-concurrency %d: must not be negative", o.MaxConcurrency)
	}
	if o.MaxConcurrency > 0 && o.Concurrency > o.MaxConcurrency {
		return fmt.Errorf("--concurrency %d is above --max-concurrency %d", o.Concurrency, o.MaxConcurrency)
	}
	if o.ReportInterval < 0 {
		return fmt.Errorf("--report-interval %s: must not be negative", o.ReportInterval)
	}
	if o.ResidentInterval < 0 {
		return fmt.Errorf("--resident-interval %s: must not be negative", o.ResidentInterval)
	}
	switch o.Strategy {
	case v1alpha1.StrategyOrdered:
		if o.ManifestURL == "" && o.HintSocket == "" {
			return fmt.Errorf("--strategy Ordered needs --manifest-url or --hint-socket to learn the order")
		}
	case v1alpha1.StrategyHotSet:
		if o.ManifestURL == "" {
			return fmt.Errorf("--strategy HotSet needs --manifest-url listing the hot files")
		}
	case v1alpha1.StrategyRanges:
		if o.ManifestURL == "" {
			return fmt.Errorf("--strategy Ranges needs --manifest-url listing the ranges to read")
		}
	case v1alpha1.StrategyResident:
		if o.BudgetBytes <= 0 {
			return fmt.Errorf("--strategy Resident needs --budget: the bytes to keep resident, under the cache's capacity")
		}
	}
	for _, a := range o.PathAliases {
		if _, _, err := parseAlias(a, o.Roots); err != nil {
			return err
		}
	}
	return nil
}

// parseAlias splits an "APP_PATH=ROOT" alias and checks both sides.
func parseAlias(alias string, roots []string) (app, root string, err error) {
	app, root, ok := strings.Cut(alias, "=")
	if !ok || !filepath.IsAbs(app) || !filepath.IsAbs(root) {
		return "", "", fmt.Errorf("--path-alias %q: want APP_PATH=ROOT with both paths absolute", alias)
	}
	app, root = filepath.Clean(app), filepath.Clean(root)
	for _, r := range roots {
		if filepath.Clean(r) == root {
			return app, root, nil
		}
	}
	return "", "", fmt.Errorf("--path-alias %q: %s is not one of the --root paths %v", alias, root, roots)
}
