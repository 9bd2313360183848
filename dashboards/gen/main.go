// Command gen writes eddy's dashboards as Grafana JSON into dashboards/json
// (run by `make generate`; CI fails when the committed files differ).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/eddy-autotune/eddy/dashboards"
)

func main() {
	out := flag.String("out", "dashboards/json", "folder for the dashboards' JSON")
	flag.Parse()
	if err := write(*out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range dashboards.Dashboards() {
		b, err := d.JSON()
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, d.UID+".json"), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
