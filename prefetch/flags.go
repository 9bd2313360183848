package prefetch

import (
	"strconv"
	"time"

	"github.com/spf13/pflag"
)

// Defaults applied by Normalize to zero-valued options.
const (
	DefaultBlockSize      = 8 << 20
	DefaultConcurrency    = 4
	DefaultReportInterval = 30 * time.Second
	// DefaultResidentInterval is how often Resident touches its files: under
	// the 2 s at which the benchmark's rclone cache evicts, and a touch of a
	// resident file is a local hit (an open and a one-byte read).
	DefaultResidentInterval = time.Second
)

// BindFlags registers on fs one flag per field of o, spelled exactly as Args
// renders them, so that parsing Args()[1:] gives back o.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar((*string)(&o.Strategy), "strategy", string(o.Strategy), "WholeDataset, Sequential, Ordered, HotSet, Ranges or Resident")
	fs.StringArrayVar(&o.Roots, "root", o.Roots, "dataset mount to read under (repeatable); nothing outside the roots is read")
	fs.Int64Var(&o.BlockSize, "block-size", o.BlockSize, "bytes per read-ahead request (0: 8 MiB)")
	fs.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "starting number of reads in flight; adapts (0: 4)")
	fs.IntVar(&o.MaxConcurrency, "max-concurrency", o.MaxConcurrency, "upper bound of the adaptive concurrency (0: max(64, 4×concurrency))")
	fs.Int64Var(&o.MaxBandwidth, "max-bandwidth", o.MaxBandwidth, "read-rate cap in bytes per second (0: none)")
	fs.Int64Var(&o.BudgetBytes, "budget", o.BudgetBytes, "at most this many bytes are read ahead (0: no cap)")
	fs.IntVar(&o.WarmThresholdPercent, "warm-threshold", o.WarmThresholdPercent, "percent of the selection read before /warm answers 200")
	fs.StringVar(&o.ManifestURL, "manifest-url", o.ManifestURL, "URL of the JSON file list (order or hot set), fetched with the pod's service-account token")
	fs.StringVar(&o.HintSocket, "hint-socket", o.HintSocket, "unix socket on which SDK read-order hints arrive (empty: none)")
	fs.StringVar(&o.StatusAddr, "status-addr", o.StatusAddr, "listen address of /status, /warm, /metrics and /healthz (empty: :9471)")
	fs.DurationVar(&o.ReportInterval, "report-interval", o.ReportInterval, "interval between progress lines in the log (0: 30s)")
	fs.DurationVar(&o.ResidentInterval, "resident-interval", o.ResidentInterval, "Resident: how often each kept file is opened and its first byte read, to stay in a least-recently-used cache; shorter than the cache's eviction interval (0: 1s)")
	fs.StringVar(&o.ServiceAccountDir, "service-account-dir", o.ServiceAccountDir, "folder with the token and ca.crt for --manifest-url (empty: the pod's service account; for running outside a pod)")
	fs.StringArrayVar(&o.PathAliases, "path-alias", o.PathAliases, "APP_PATH=ROOT: where the application sees a root, to follow SDK hints (repeatable)")
}

// withDefaults returns o with every zero value that has a default filled in.
func (o Options) withDefaults() Options {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxConcurrency == 0 {
		o.MaxConcurrency = max(64, 4*o.Concurrency)
	}
	if o.ReportInterval == 0 {
		o.ReportInterval = DefaultReportInterval
	}
	if o.ResidentInterval == 0 {
		o.ResidentInterval = DefaultResidentInterval
	}
	if o.ServiceAccountDir == "" {
		o.ServiceAccountDir = serviceAccountDir
	}
	if o.StatusAddr == "" {
		o.StatusAddr = ":" + strconv.Itoa(StatusPort)
	}
	return o
}
