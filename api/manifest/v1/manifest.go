// Package manifestv1 is the contract of the analyzer's manifest endpoint: the
// request a prefetcher makes (built by the webhook into the sidecar's
// arguments, parsed by the analyzer) and the document it gets back. It is the
// only place either is spelled.
package manifestv1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// PathPrefix is where the endpoint is served.
const PathPrefix = "/v1/manifests/"

// Audience is the audience of the projected service-account token a
// prefetcher sends with a manifest request; the analyzer accepts no other,
// so neither an API server token nor a collector's intake token is
// replayed against it.
const Audience = "eddy.io/manifests"

// Bounds of a request.
const (
	// MaxLimit bounds the files one response carries.
	MaxLimit = 100_000
	// DefaultHotShare is the share of bytes read that the hot set covers.
	DefaultHotShare = 0.8
)

// ErrPath is wrapped by ParseRequest's error when the path names no manifest
// (the endpoint answers 404); other errors are bad parameters (400).
var ErrPath = errors.New("no such manifest path")

// Order is the order of a Document's Files.
type Order string

const (
	// OrderAccess lists files in the order of their latest pass (first access
	// for a file read once): what Sequential, Ordered and WholeDataset
	// prefetchers read.
	OrderAccess Order = "access"
	// OrderHot lists the hot set, hottest first: what a HotSet prefetcher
	// reads.
	OrderHot Order = "hot"
	// OrderRanges lists, in access order, the files whose latest run read
	// ranges of them, with those ranges in Ranges: what a Ranges
	// prefetcher reads.
	OrderRanges Order = "ranges"
)

// MaxRanges bounds the ranges one Document carries, all files together.
const MaxRanges = 1 << 20

// Range is the byte range [Offset, End) of a file, as [offset, end] in JSON.
type Range [2]int64

// Offset is where the range begins.
func (r Range) Offset() int64 { return r[0] }

// End is where the range ends (exclusive).
func (r Range) End() int64 { return r[1] }

// FileRanges are the ranges of one file, sorted and disjoint.
type FileRanges struct {
	Path   string  `json:"path"`
	Ranges []Range `json:"ranges"`
}

// Document is what the endpoint serves.
type Document struct {
	// Workload is "<Kind>/<name>" and Dataset the dataset's name.
	Workload string `json:"workload"`
	Dataset  string `json:"dataset"`
	// Files to read, dataset-relative, in the request's Order.
	Files []string `json:"files"`
	// Hot is the smallest set of files that took HotShare of the bytes read,
	// hottest first.
	Hot      []string `json:"hot,omitempty"`
	HotShare float64  `json:"hotShare,omitempty"`
	// Ranges are set for OrderRanges: per file of Files, in the same order,
	// the byte ranges the latest run read at random offsets.
	Ranges []FileRanges `json:"ranges,omitempty"`
	// Truncated is set when Files was cut to the request's limit or the
	// analyzer's per-workload bound.
	Truncated bool `json:"truncated,omitempty"`
}

// Decode reads a Document, or a bare JSON array of paths (what a person may
// hand a prefetcher), allowing at most maxFiles files.
func Decode(body []byte, maxFiles int) (Document, error) {
	var d Document
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if err := json.Unmarshal(trimmed, &d.Files); err != nil {
			return Document{}, fmt.Errorf("manifest: want a JSON array of paths or {\"files\": [...]}: %w", err)
		}
	} else if err := json.Unmarshal(trimmed, &d); err != nil {
		return Document{}, fmt.Errorf("manifest: want a JSON array of paths or {\"files\": [...]}: %w", err)
	}
	if len(d.Files) > maxFiles {
		return Document{}, fmt.Errorf("manifest lists %d files, more than the limit of %d", len(d.Files), maxFiles)
	}
	n := 0
	for _, f := range d.Ranges {
		n += len(f.Ranges)
		for _, r := range f.Ranges {
			if r.Offset() < 0 || r.End() <= r.Offset() {
				return Document{}, fmt.Errorf("manifest: range %v of %s is empty or negative", r, f.Path)
			}
		}
	}
	if n > MaxRanges {
		return Document{}, fmt.Errorf("manifest lists %d ranges, more than the limit of %d", n, MaxRanges)
	}
	if d.Files == nil {
		d.Files = []string{}
	}
	return d, nil
}

// Request is a parsed request: the manifest of the AccessProfile named
// Profile in Namespace, or — in the long form — of the workload Kind/Workload
// reading Dataset there.
type Request struct {
	Namespace string
	Profile   string
	Kind      string
	Workload  string
	Dataset   string
	// Limit is at most MaxLimit; HotShare in (0, 1].
	Limit    int
	HotShare float64
	Order    Order
}

// URL is where a prefetcher fetches the manifest of profile in namespace from
// the analyzer at base (scheme and host, e.g. https://eddy-analyzer.eddy-system.svc:9471).
func URL(base, namespace, profile string, order Order) string {
	u := strings.TrimSuffix(base, "/") + PathPrefix + url.PathEscape(namespace) + "/" + url.PathEscape(profile)
	if order != "" && order != OrderAccess {
		u += "?order=" + url.QueryEscape(string(order))
	}
	return u
}

// ParseRequest parses a request URL: PathPrefix{namespace}/{profile} or
// PathPrefix{namespace}/{kind}/{workload}/{dataset}, with optional limit,
// hotShare and order query parameters. Its errors say what is wrong.
func ParseRequest(u *url.URL) (Request, error) {
	rest, ok := strings.CutPrefix(u.Path, PathPrefix)
	parts := strings.Split(rest, "/")
	if !ok || (len(parts) != 2 && len(parts) != 4) || anyEmpty(parts) {
		return Request{}, fmt.Errorf("%w: want %s{namespace}/{profile} or %s{namespace}/{workloadKind}/{workloadName}/{dataset}", ErrPath, PathPrefix, PathPrefix)
	}
	r := Request{Namespace: parts[0], Limit: MaxLimit, HotShare: DefaultHotShare, Order: OrderAccess}
	if len(parts) == 2 {
		r.Profile = parts[1]
	} else {
		r.Kind, r.Workload, r.Dataset = parts[1], parts[2], parts[3]
	}
	q := u.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > MaxLimit {
			return Request{}, fmt.Errorf("limit %q: want an integer in 1..%d", v, MaxLimit)
		}
		r.Limit = n
	}
	if v := q.Get("hotShare"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0 && f <= 1) {
			return Request{}, fmt.Errorf("hotShare %q: want a number in (0, 1]", v)
		}
		r.HotShare = f
	}
	switch o := Order(q.Get("order")); o {
	case "", OrderAccess:
	case OrderHot, OrderRanges:
		r.Order = o
	default:
		return Request{}, fmt.Errorf("order %q: want %s (default), %s or %s", o, OrderAccess, OrderHot, OrderRanges)
	}
	return r, nil
}

func anyEmpty(ss []string) bool {
	for _, s := range ss {
		if s == "" {
			return true
		}
	}
	return false
}
