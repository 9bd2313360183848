package collector

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

// tokenFile is the collector's credential towards the analyzer: its pod's
// projected service-account token of accessv1.Audience, re-read when the
// kubelet rotates it.
type tokenFile struct {
	path string

	mu      sync.Mutex
	token   string
	modTime time.Time
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t *tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	st, err := os.Stat(t.path)
	if err != nil {
		return nil, fmt.Errorf("collector token %s: %w (mount the pod's projected service-account token of audience %s there)", t.path, err, accessv1.Audience)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token == "" || !st.ModTime().Equal(t.modTime) {
		b, err := os.ReadFile(t.path)
		if err != nil {
			return nil, fmt.Errorf("collector token %s: %w", t.path, err)
		}
		t.token, t.modTime = strings.TrimSpace(string(b)), st.ModTime()
	}
	return map[string]string{accessv1.AuthorizationMetadata: "Bearer " + t.token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: the
// token never travels in the clear.
func (*tokenFile) RequireTransportSecurity() bool { return true }

// intakeTLS is how the collector verifies the analyzer: the system's roots
// and caFile (the cluster CA that signs the analyzer's certificate; skipped
// when it does not exist), for serverName (default: the address's host).
func intakeTLS(address, caFile, serverName string) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		switch {
		case err == nil:
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("analyzer CA %s holds no PEM certificate", caFile)
			}
		case !os.IsNotExist(err):
			return nil, fmt.Errorf("analyzer CA %s: %w", caFile, err)
		}
	}
	if serverName == "" {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return nil, fmt.Errorf("analyzer address %q: %w", address, err)
		}
		serverName = host
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName}, nil
}

var _ credentials.PerRPCCredentials = (*tokenFile)(nil)
