// Package promserver runs a real Prometheus (Debian's prometheus package) for
// tests and the demo: it writes a configuration with eddy's rules and the
// scrape jobs given, starts the server on a free loopback port, and queries
// it through the HTTP API.
package promserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"
)

// Binary is where Debian's prometheus package installs the server.
const Binary = "/usr/bin/prometheus"

// Options configure a Prometheus.
type Options struct {
	// Dir holds the configuration, the TSDB and prometheus.log.
	Dir string
	// ScrapeConfigs are Prometheus scrape_configs entries.
	ScrapeConfigs []map[string]any
	// RuleFiles are loaded and evaluated (absolute paths).
	RuleFiles []string
	// Interval is the scrape and rule evaluation interval (default 2s).
	Interval time.Duration
}

// Server is a running Prometheus.
type Server struct {
	// URL is its base URL, e.g. http://127.0.0.1:43127.
	URL string
	// Log is the path of its log.
	Log string
	// Started is when it began scraping.
	Started time.Time
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Start writes the configuration and starts Prometheus; it returns once the
// server answers /-/ready.
func Start(ctx context.Context, o Options) (*Server, error) {
	if _, err := os.Stat(Binary); err != nil {
		return nil, fmt.Errorf("prometheus not found at %s: apt-get install prometheus (hack/install-deps.sh installs it): %w", Binary, err)
	}
	if o.Interval == 0 {
		o.Interval = 2 * time.Second
	}
	cfg := map[string]any{
		"global": map[string]any{
			"scrape_interval": o.Interval.String(), "evaluation_interval": o.Interval.String(), "scrape_timeout": o.Interval.String(),
		},
		"rule_files":     o.RuleFiles,
		"scrape_configs": o.ScrapeConfigs,
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(o.Dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	logPath := filepath.Join(o.Dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(Binary, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(o.Dir, "tsdb"),
		"--web.listen-address="+addr, "--storage.tsdb.retention.time=1d")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start prometheus: %w", err)
	}
	s := &Server{URL: "http://" + addr, Log: logPath, Started: time.Now(), cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.exited:
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("prometheus exited at start; %s:\n%s", logPath, out)
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if resp, err := http.Get(s.URL + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("prometheus not ready after 30s; see %s", logPath)
		}
	}
}

// Stop ends Prometheus (SIGTERM, then SIGKILL after 10s).
func (s *Server) Stop() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
}

// Series is one series of a range query.
type Series struct {
	Labels map[string]string
	Times  []time.Time
	Values []float64
}

// QueryRange evaluates expr from start to end every step.
func (s *Server) QueryRange(ctx context.Context, expr string, start, end time.Time, step time.Duration) ([]Series, error) {
	v := url.Values{"query": {expr}, "start": {unix(start)}, "end": {unix(end)}, "step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}}
	var data struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	}
	if err := s.api(ctx, "/api/v1/query_range", v, &data); err != nil {
		return nil, fmt.Errorf("query %s: %w", expr, err)
	}
	out := make([]Series, 0, len(data.Result))
	for _, r := range data.Result {
		se := Series{Labels: r.Metric}
		for _, p := range r.Values {
			ts, _ := p[0].(float64)
			str, _ := p[1].(string)
			f, err := strconv.ParseFloat(str, 64)
			if err != nil {
				continue
			}
			se.Times = append(se.Times, time.Unix(0, int64(ts*1e9)))
			se.Values = append(se.Values, f)
		}
		out = append(out, se)
	}
	return out, nil
}

// RuleHealth is the health of one loaded rule.
type RuleHealth struct {
	Name, Health, LastError string
}

// Rules returns every loaded rule with its health.
func (s *Server) Rules(ctx context.Context) ([]RuleHealth, error) {
	var data struct {
		Groups []struct {
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := s.api(ctx, "/api/v1/rules", nil, &data); err != nil {
		return nil, err
	}
	var out []RuleHealth
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			out = append(out, RuleHealth{r.Name, r.Health, r.LastError})
		}
	}
	return out, nil
}

// Target is one scrape target with its health.
type Target struct {
	Job, Instance, Health, LastError string
}

// Targets returns the active scrape targets.
func (s *Server) Targets(ctx context.Context) ([]Target, error) {
	var data struct {
		ActiveTargets []struct {
			Labels    map[string]string `json:"labels"`
			Health    string            `json:"health"`
			LastError string            `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := s.api(ctx, "/api/v1/targets", nil, &data); err != nil {
		return nil, err
	}
	var out []Target
	for _, t := range data.ActiveTargets {
		out = append(out, Target{t.Labels["job"], t.Labels["instance"], t.Health, t.LastError})
	}
	return out, nil
}

func (s *Server) api(ctx context.Context, path string, v url.Values, data any) error {
	u := s.URL + path
	if v != nil {
		u += "?" + v.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("GET %s: HTTP %d: %w", path, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return errors.New(body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

func unix(t time.Time) string { return strconv.FormatFloat(float64(t.UnixNano())/1e9, 'f', 3, 64) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
