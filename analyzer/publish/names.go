package publish

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"

	"github.com/eddy-autotune/eddy/analyzer"
)

var notDNS = regexp.MustCompile(`[^a-z0-9.-]+`)

// ProfileName is the AccessProfile name of a key:
// "<kind>-<workload>.<dataset>", lower-cased, made a valid DNS subdomain,
// and shortened with a hash suffix when too long. A workload name with a dot
// would make the split ambiguous ("deployment-a.b" + "c" against
// "deployment-a" + "b.c"), so such names carry a hash of the key's parts;
// every other name is what it always was.
func ProfileName(k analyzer.Key) string {
	kind := strings.ToLower(k.WorkloadKind)
	name := dnsName(kind + "-" + k.WorkloadName + "." + k.DatasetName)
	if !strings.Contains(k.WorkloadName, ".") {
		return name
	}
	return dnsName(name + "-" + shortHash(kind, k.WorkloadName, k.DatasetName))
}

func dnsName(s string) string {
	s = notDNS.ReplaceAllString(strings.ToLower(s), "-")
	s = strings.Trim(s, "-.")
	const limit = 200
	if len(s) > limit {
		sum := sha256.Sum256([]byte(s))
		s = strings.TrimRight(s[:limit-9], "-.") + "-" + hex.EncodeToString(sum[:4])
	}
	if s == "" {
		s = "unnamed"
	}
	return s
}

func shortHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:3])
}
