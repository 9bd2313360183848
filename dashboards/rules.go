package dashboards

import (
	_ "embed"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// RulesFile is eddy's Prometheus rules file, relative to the repository root.
const RulesFile = "dashboards/rules/eddy.rules.yaml"

// RulesYAML is the content of RulesFile, for programs that run from
// anywhere (the demo).
//
//go:embed rules/eddy.rules.yaml
var RulesYAML []byte

// Rule is one recording or alerting rule of a Prometheus rules file.
type Rule struct {
	Record      string            `json:"record,omitempty"`
	Alert       string            `json:"alert,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Name is the rule's record or alert name.
func (r Rule) Name() string {
	if r.Alert != "" {
		return r.Alert
	}
	return r.Record
}

// RuleGroup is a group of rules as Prometheus and prometheus-operator's
// PrometheusRule spell it.
type RuleGroup struct {
	Name  string `json:"name"`
	Rules []Rule `json:"rules"`
}

// LoadRuleGroups reads a Prometheus rules file.
func LoadRuleGroups(path string) ([]RuleGroup, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f struct {
		Groups []RuleGroup `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("parse rules %s: %w", path, err)
	}
	return f.Groups, nil
}

// LoadRules reads every rule of a Prometheus rules file.
func LoadRules(path string) ([]Rule, error) {
	groups, err := LoadRuleGroups(path)
	if err != nil {
		return nil, err
	}
	var out []Rule
	for _, g := range groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}
