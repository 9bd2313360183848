package prefetch

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	manifestv1 "github.com/eddy-autotune/eddy/api/manifest/v1"
)

// Bounds on the manifest, so a wrong URL cannot exhaust the sidecar.
const (
	maxManifestBytes   = 256 << 20
	maxManifestEntries = 4 << 20
	manifestAttempts   = 4
)

// fetchManifest GETs the manifest with the pod's service-account token as a
// Bearer token, trusting the service-account CA in addition to the system's,
// retrying a few times with backoff.
func (p *Prefetcher) fetchManifest(ctx context.Context) (manifestv1.Document, error) {
	var err error
	for attempt := 0; attempt < manifestAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return manifestv1.Document{}, ctx.Err()
			case <-time.After(time.Duration(attempt) * p.manifestRetryDelay):
			}
		}
		var d manifestv1.Document
		d, err = p.fetchManifestOnce(ctx)
		if err == nil {
			return d, nil
		}
		p.log.Info("manifest fetch failed", "url", p.opts.ManifestURL, "attempt", attempt+1, "error", err.Error())
	}
	return manifestv1.Document{}, err
}

func (p *Prefetcher) fetchManifestOnce(ctx context.Context) (manifestv1.Document, error) {
	client, err := p.manifestClient()
	if err != nil {
		return manifestv1.Document{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.opts.ManifestURL, nil)
	if err != nil {
		return manifestv1.Document{}, fmt.Errorf("--manifest-url %q: %w", p.opts.ManifestURL, err)
	}
	req.Header.Set("Accept", "application/json")
	if tok, err := os.ReadFile(filepath.Join(p.serviceAccountDir, "token")); err == nil {
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := client.Do(req)
	if err != nil {
		return manifestv1.Document{}, fmt.Errorf("fetch manifest %s: %w", p.opts.ManifestURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return manifestv1.Document{}, fmt.Errorf("fetch manifest %s: %s: %s", p.opts.ManifestURL, resp.Status, bytes.TrimSpace(msg))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
	if err != nil {
		return manifestv1.Document{}, fmt.Errorf("read manifest %s: %w", p.opts.ManifestURL, err)
	}
	if len(body) > maxManifestBytes {
		return manifestv1.Document{}, fmt.Errorf("manifest %s is larger than %d bytes", p.opts.ManifestURL, maxManifestBytes)
	}
	return parseManifest(body)
}

// parseManifest accepts a manifestv1.Document or a bare [...] of paths.
func parseManifest(body []byte) (manifestv1.Document, error) {
	return manifestv1.Decode(body, maxManifestEntries)
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
