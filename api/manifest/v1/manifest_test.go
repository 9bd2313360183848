package manifestv1

import (
	"errors"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The webhook builds the URL a prefetcher fetches; the analyzer parses it.
func TestURLRoundTrips(t *testing.T) {
	for _, order := range []Order{OrderAccess, OrderHot, OrderRanges} {
		u, err := url.Parse(URL("https://eddy-analyzer.eddy-system.svc:9471/", "ml", "job-train.imagenet", order))
		require.NoError(t, err)
		r, err := ParseRequest(u)
		require.NoError(t, err)
		assert.Equal(t, Request{Namespace: "ml", Profile: "job-train.imagenet", Limit: MaxLimit, HotShare: DefaultHotShare, Order: order}, r)
	}
}

func TestParseRequest(t *testing.T) {
	r, err := ParseRequest(&url.URL{Path: PathPrefix + "ml/Job/train/imagenet", RawQuery: "limit=10&hotShare=0.5"})
	require.NoError(t, err)
	assert.Equal(t, Request{Namespace: "ml", Kind: "Job", Workload: "train", Dataset: "imagenet", Limit: 10, HotShare: 0.5, Order: OrderAccess}, r)

	for _, path := range []string{"/v2/manifests/ml/p", PathPrefix + "ml", PathPrefix + "ml/a/b", PathPrefix + "ml//p", PathPrefix + "ml/a/b/c/d"} {
		_, err := ParseRequest(&url.URL{Path: path})
		assert.True(t, errors.Is(err, ErrPath), "%s: %v", path, err)
	}
	for _, q := range []string{"limit=0", "limit=100001", "limit=x", "hotShare=0", "hotShare=1.5", "hotShare=NaN", "order=random"} {
		_, err := ParseRequest(&url.URL{Path: PathPrefix + "ml/p", RawQuery: q})
		assert.Error(t, err, q)
		assert.False(t, errors.Is(err, ErrPath), q)
	}
}

func TestDecode(t *testing.T) {
	d, err := Decode([]byte(` ["a", "b"] `), 10)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, d.Files)
	d, err = Decode([]byte(`{"workload":"Job/train","files":["x"],"truncated":true}`), 10)
	require.NoError(t, err)
	assert.Equal(t, Document{Workload: "Job/train", Files: []string{"x"}, Truncated: true}, d)
	d, err = Decode([]byte(`{}`), 10)
	require.NoError(t, err)
	assert.Equal(t, []string{}, d.Files)
	_, err = Decode([]byte(`["a","b","c"]`), 2)
	assert.ErrorContains(t, err, "more than the limit")
	_, err = Decode([]byte(`{"files": 3}`), 2)
	assert.Error(t, err)

	d, err = Decode([]byte(`{"files":["big"],"ranges":[{"path":"big","ranges":[[0,4096],[81920,86016]]}]}`), 10)
	require.NoError(t, err)
	assert.Equal(t, []FileRanges{{Path: "big", Ranges: []Range{{0, 4096}, {81920, 86016}}}}, d.Ranges)
	assert.EqualValues(t, 81920, d.Ranges[0].Ranges[1].Offset())
	for _, bad := range []string{`[[4096,4096]]`, `[[-1,10]]`, `[[10,5]]`} {
		_, err = Decode([]byte(`{"files":["big"],"ranges":[{"path":"big","ranges":`+bad+`}]}`), 10)
		assert.ErrorContains(t, err, "empty or negative", bad)
	}
}
