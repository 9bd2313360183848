// Command eddy-workload is the program of eddy's workload image. Real-node
// tests run it as pods:
//
//	eddy-workload read --dir /data --pattern sequential --report /out/report.json --hold
//	eddy-workload warm --dir /data --parallel 16
//	eddy-workload serve --addr :8080 --dir /out
//	eddy-workload whoami --server https://kubernetes.default.svc
//
// read reads a dataset with an access pattern and writes a JSON report;
// warm reads every file of a dataset with parallel readers, as a
// hand-written warm-up script does;
// serve serves a folder over HTTP; whoami uses the pod's service-account
// token against the API server and reports who it is and what it may do.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/eddy-autotune/eddy/test/node/workload"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// began is when the program started (package variables initialise before main).
var began = time.Now()

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: eddy-workload read|warm|serve|whoami [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "read":
		err = read(os.Args[2:])
	case "warm":
		err = warm(os.Args[2:])
	case "serve":
		err = serve(os.Args[2:])
	case "whoami":
		err = whoami(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: use read, warm, serve or whoami", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "eddy-workload:", err)
		_ = os.WriteFile("/dev/termination-log", []byte(err.Error()), 0o644)
		os.Exit(1)
	}
}

func read(args []string) error {
	fs := flag.NewFlagSet("read", flag.ExitOnError)
	dir := fs.String("dir", "/data", "dataset folder")
	pattern := fs.String("pattern", string(workload.Sequential), "sequential, random4k, smallfiles or hotset")
	epochs := fs.Int("epochs", 1, "passes over the dataset")
	seed := fs.Uint64("seed", 1, "seed for random orders and offsets")
	ops := fs.Int("ops-per-file", 0, "random4k: reads per file (0: one per 4 KiB)")
	compute := fs.Duration("compute", 0, "pause after each file (each 4 KiB random read), standing in for work on a sample")
	report := fs.String("report", "", "also write the JSON report to this file")
	hold := fs.Bool("hold", false, "keep running after the read until SIGTERM")
	_ = fs.Parse(args)
	r, err := workload.Read(*dir, workload.Pattern(*pattern), workload.Options{Epochs: *epochs, Seed: *seed, RandomOpsPerFile: *ops, Compute: *compute})
	if err != nil {
		return err
	}
	r.Began = float64(began.UnixNano()) / 1e9
	data, _ := json.Marshal(r)
	fmt.Println(string(data))
	if *report != "" {
		if err := os.MkdirAll(filepath.Dir(*report), 0o755); err != nil {
			return err
		}
		tmp := *report + ".tmp"
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, *report); err != nil {
			return err
		}
	}
	if *hold {
		waitForSignal()
	}
	return nil
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", ":8080", "listen address")
	dir := fs.String("dir", "/out", "folder to serve")
	_ = fs.Parse(args)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.Handle("/", http.FileServer(http.Dir(*dir)))
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		waitForSignal()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

// whoamiResult is what whoami prints and writes to the termination log.
type whoamiResult struct {
	Server   string   `json:"server"`
	Username string   `json:"username"`
	Groups   []string `json:"groups"`
	// Allowed and Denied map "VERB RESOURCE" to the HTTP status seen.
	Status map[string]int `json:"status"`
}

func whoami(args []string) error {
	fs := flag.NewFlagSet("whoami", flag.ExitOnError)
	server := fs.String("server", "", "API server URL (default: from KUBERNETES_SERVICE_HOST/PORT)")
	_ = fs.Parse(args)
	if *server == "" {
		*server = "https://" + os.Getenv("KUBERNETES_SERVICE_HOST") + ":" + os.Getenv("KUBERNETES_SERVICE_PORT")
	}
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return fmt.Errorf("no service-account token (is ServiceAccount admission on?): %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return fmt.Errorf("no service-account CA: %w", err)
	}
	ns, _ := os.ReadFile(filepath.Join(saDir, "namespace"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	do := func(method, path string, body []byte) (int, []byte, error) {
		req, err := http.NewRequest(method, *server+path, bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b, nil
	}
	res := whoamiResult{Server: *server, Status: map[string]int{}}
	code, body, err := do("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
		[]byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`))
	if err != nil {
		return fmt.Errorf("reach the API server at %s: %w", *server, err)
	}
	if code != http.StatusCreated && code != http.StatusOK {
		return fmt.Errorf("SelfSubjectReview: HTTP %d: %s", code, body)
	}
	var review struct {
		Status struct {
			UserInfo struct {
				Username string   `json:"username"`
				Groups   []string `json:"groups"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := json.Unmarshal(body, &review); err != nil {
		return fmt.Errorf("decode SelfSubjectReview: %w", err)
	}
	res.Username, res.Groups = review.Status.UserInfo.Username, review.Status.UserInfo.Groups
	for _, probe := range []string{"pods", "secrets"} {
		code, _, err := do("GET", "/api/v1/namespaces/"+string(ns)+"/"+probe, nil)
		if err != nil {
			return err
		}
		res.Status["list "+probe] = code
	}
	data, _ := json.Marshal(res)
	fmt.Println(string(data))
	return os.WriteFile("/dev/termination-log", data, 0o644)
}

func waitForSignal() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
}

func warm(args []string) error {
	fs := flag.NewFlagSet("warm", flag.ExitOnError)
	dir := fs.String("dir", "/data", "dataset folder")
	parallel := fs.Int("parallel", 16, "files read at once")
	_ = fs.Parse(args)
	r, err := workload.Warm(*dir, *parallel)
	if err != nil {
		return err
	}
	r.Began = float64(began.UnixNano()) / 1e9
	data, _ := json.Marshal(r)
	fmt.Println(string(data))
	return nil
}
