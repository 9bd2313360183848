package promserver

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/eddy-autotune/eddy/dashboards"
)

// Result is what one query of a panel or rule returned over a time range.
type Result struct {
	// Where names the query: "<dashboard uid>/<panel title>#<n>" or "rule <name>".
	Where string
	// Expr is the query as sent (variables set to All).
	Expr string
	// Series are the series returned; empty means no data.
	Series []Series
	Err    error
}

// HasData reports whether the query returned at least one sample.
func (r Result) HasData() bool {
	for _, s := range r.Series {
		if len(s.Values) > 0 {
			return true
		}
	}
	return false
}

// Evaluate runs every query of every panel of eddy's dashboards, and every
// rule expression of rulesFile, as range queries from start to end, as a
// Grafana panel would. An alert's expression is evaluated without its final
// threshold (the part before "> x", and before "unless ...": what the alert
// watches), since in a healthy run the alert itself must not fire.
// rateInterval replaces Grafana's $__rate_interval.
func Evaluate(ctx context.Context, s *Server, rulesFile string, start, end time.Time, step time.Duration, rateInterval string) ([]Result, error) {
	var out []Result
	for _, d := range dashboards.Dashboards() {
		for _, p := range d.Panels() {
			for i, q := range p.Queries {
				expr := dashboards.Expand(q.Expr, rateInterval)
				series, err := s.QueryRange(ctx, expr, start, end, step)
				out = append(out, Result{Where: fmt.Sprintf("%s/%s#%d", d.UID, p.Title, i+1), Expr: expr, Series: series, Err: err})
			}
		}
	}
	rules, err := dashboards.LoadRules(rulesFile)
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		expr := r.Expr
		if r.Alert != "" {
			if expr, err = Watched(r.Expr); err != nil {
				return nil, fmt.Errorf("alert %s: %w", r.Alert, err)
			}
		}
		series, err := s.QueryRange(ctx, expr, start, end, step)
		out = append(out, Result{Where: "rule " + r.Name(), Expr: expr, Series: series, Err: err})
	}
	return out, nil
}

// Watched returns what an alert expression watches: expr without its outer
// comparisons with a threshold and without an outer "unless".
func Watched(expr string) (string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return "", err
	}
	for {
		switch b := e.(type) {
		case *parser.BinaryExpr:
			if b.Op.IsComparisonOperator() || b.Op == parser.LUNLESS {
				e = b.LHS
				continue
			}
		case *parser.ParenExpr:
			e = b.Expr
			continue
		}
		return e.String(), nil
	}
}
