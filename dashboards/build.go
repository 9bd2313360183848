package dashboards

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// DatasourceVariable is the name of every dashboard's Prometheus datasource
// variable; every panel and query uses it.
const DatasourceVariable = "datasource"

// Kind is how a panel shows its queries.
type Kind int

const (
	// TimeSeries plots each series over time.
	TimeSeries Kind = iota
	// Stat shows the last value of each series.
	Stat
)

// Query is one PromQL query of a panel. Expr may use the dashboard's
// variables ($namespace, ...) and Grafana's $__rate_interval.
type Query struct {
	Expr   string
	Legend string
}

// Panel is one panel: what it shows, in which unit, and what a person should
// do when it looks bad (Description).
type Panel struct {
	Title       string
	Description string
	// Unit is a Grafana unit id: bytes, Bps, s, percentunit, short, ...
	Unit    string
	Kind    Kind
	Queries []Query
}

// Variable is a dashboard variable filled from the label values of a metric.
type Variable struct {
	// Name is used as $Name in queries; Label is what the picker shows.
	Name, Label string
	// Query is a Grafana Prometheus variable query, e.g.
	// label_values(eddy_operator_profile_info, namespace).
	Query string
}

// Row groups panels under a title.
type Row struct {
	Title  string
	Panels []Panel
}

// Dashboard is one of eddy's dashboards.
type Dashboard struct {
	// UID is stable: links and provisioning refer to it. It names the JSON file.
	UID, Title, Description string
	Variables               []Variable
	Rows                    []Row
}

// Panels returns the dashboard's panels in order.
func (d Dashboard) Panels() []Panel {
	var ps []Panel
	for _, r := range d.Rows {
		ps = append(ps, r.Panels...)
	}
	return ps
}

// Build returns the Grafana model of d: a Prometheus datasource variable,
// d's variables (multi-valued, with All), one row per Row and panels of 8×8
// grid units, three to a line, numbered in order. It is the classic
// dashboard model (schema v1), which file provisioning and Grafana's
// dashboard sidecar load on every Grafana version; the SDK's v2 model needs
// Grafana 12 with its v2 API enabled.
func (d Dashboard) Build() (dashboard.Dashboard, error) { //nolint:staticcheck // v1 model on purpose, see above
	ds := common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${" + DatasourceVariable + "}")}
	//nolint:staticcheck // v1 model on purpose, see Build
	b := dashboard.NewDashboardBuilder(d.Title).
		Uid(d.UID).
		Description(d.Description).
		Tags([]string{"eddy"}).
		Refresh("30s").
		Time("now-3h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder(DatasourceVariable).Label("Prometheus").Type("prometheus"))
	for _, v := range d.Variables {
		b.WithVariable(dashboard.NewQueryVariableBuilder(v.Name).
			Label(v.Label).
			Datasource(ds).
			Query(dashboard.StringOrMap{String: cog.ToPtr(v.Query)}).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc).
			Multi(true).
			IncludeAll(true).
			AllValue(".*"))
	}
	id := uint32(0)
	for _, r := range d.Rows {
		id++
		b.WithRow(dashboard.NewRowBuilder(r.Title).Id(id))
		for _, p := range r.Panels {
			id++
			targets := make([]cog.Builder[variants.Dataquery], 0, len(p.Queries))
			for i, q := range p.Queries {
				t := prometheus.NewDataqueryBuilder().
					Datasource(ds).
					RefId(string(rune('A' + i))).
					Expr(q.Expr).
					LegendFormat(q.Legend)
				if p.Kind == Stat {
					t.Instant()
				} else {
					t.Range()
				}
				targets = append(targets, t)
			}
			switch p.Kind {
			case Stat:
				b.WithPanel(stat.NewPanelBuilder().Id(id).Title(p.Title).Description(p.Description).
					Unit(p.Unit).Datasource(ds).Targets(targets).Height(6).Span(8).
					ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"})))
			default:
				b.WithPanel(timeseries.NewPanelBuilder().Id(id).Title(p.Title).Description(p.Description).
					Unit(p.Unit).Datasource(ds).Targets(targets).Height(8).Span(8).
					Min(0).FillOpacity(10).
					Legend(common.NewVizLegendOptionsBuilder().ShowLegend(true).DisplayMode(common.LegendDisplayModeList).Placement(common.LegendPlacementBottom)))
			}
		}
	}
	return b.Build()
}

// JSON returns d's Grafana model as indented JSON, as committed under json/.
func (d Dashboard) JSON() ([]byte, error) {
	m, err := d.Build()
	if err != nil {
		return nil, fmt.Errorf("build dashboard %s: %w", d.UID, err)
	}
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshal dashboard %s: %w", d.UID, err)
	}
	return append(out, '\n'), nil
}

// Expand replaces Grafana's variables in a query with what Prometheus
// accepts: every dashboard variable by ".*" (All), $__rate_interval and
// $__interval by rateInterval, so that a query can be parsed or evaluated
// outside Grafana.
func Expand(expr, rateInterval string) string {
	r := strings.NewReplacer("$__rate_interval", rateInterval, "$__interval", rateInterval, "$__range", rateInterval)
	expr = r.Replace(expr)
	for _, v := range []string{"namespace", "workload", "dataset"} {
		expr = strings.ReplaceAll(expr, "$"+v, ".*")
	}
	return expr
}
