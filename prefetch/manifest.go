package prefetch

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Bounds on the manifest, so a wrong URL cannot exhaust the sidecar.
const (
	maxManifestBytes   = 256 << 20
	maxManifestEntries = 4 << 20
	manifestAttempts   = 4
)

// Manifest is the document at --manifest-url: the files to read, in order
// (for HotSet: hottest first), as paths relative to a root or absolute
// paths under one. It may also be sent as a bare JSON array of paths.
type Manifest struct {
	Files []string `json:"files"`
}

// fetchManifest GETs the manifest with the pod's service-account token as a
// Bearer token, trusting the service-account CA in addition to the system's,
// retrying a few times with backoff.
func (p *Prefetcher) fetchManifest(ctx context.Context) ([]string, error) {
	var err error
	for attempt := 0; attempt < manifestAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * p.manifestRetryDelay):
			}
		}
		var files []string
		files, err = p.fetchManifestOnce(ctx)
		if err == nil {
			return files, nil
		}
		p.log.Info("manifest fetch failed", "url", p.opts.ManifestURL, "attempt", attempt+1, "error", err.Error())
	}
	return nil, err
}

func (p *Prefetcher) fetchManifestOnce(ctx context.Context) ([]string, error) {
	client, err := p.manifestClient()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.opts.ManifestURL, nil)
	if err != nil {
		return nil, fmt.Errorf("--manifest-url %q: %w", p.opts.ManifestURL, err)
	}
	req.Header.Set("Accept", "application/json")
	if tok, err := os.ReadFile(filepath.Join(p.serviceAccountDir, "token")); err == nil {
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest %s: %w", p.opts.ManifestURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("fetch manifest %s: %s: %s", p.opts.ManifestURL, resp.Status, bytes.TrimSpace(msg))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", p.opts.ManifestURL, err)
	}
	if len(body) > maxManifestBytes {
		return nil, fmt.Errorf("manifest %s is larger than %d bytes", p.opts.ManifestURL, maxManifestBytes)
	}
	return parseManifest(body)
}

// parseManifest accepts {"files": [...]} or a bare [...] of paths.
func parseManifest(body []byte) ([]string, error) {
	var files []string
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if err := json.Unmarshal(trimmed, &files); err != nil {
			return nil, fmt.Errorf("manifest: want a JSON array of paths or {\"files\": [...]}: %w", err)
		}
	} else {
		var m Manifest
		if err := json.Unmarshal(trimmed, &m); err != nil {
			return nil, fmt.Errorf("manifest: want a JSON array of paths or {\"files\": [...]}: %w", err)
		}
		files = m.Files
	}
	if len(files) > maxManifestEntries {
		return nil, fmt.Errorf("manifest lists %d files, more than the limit of %d", len(files), maxManifestEntries)
	}
	if files == nil {
		files = []string{}
	}
	return files, nil
}

func (p *Prefetcher) manifestClient() (*http.Client, error) {
	if p.httpClient != nil {
		return p.httpClient, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if ca, err := os.ReadFile(filepath.Join(p.serviceAccountDir, "ca.crt")); err == nil {
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("service-account CA %s holds no PEM certificate", filepath.Join(p.serviceAccountDir, "ca.crt"))
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	p.httpClient = &http.Client{Transport: tr}
	return p.httpClient, nil
}
