// Package tlsreload serves a TLS certificate from a pair of files and picks
// up a renewed pair without a restart, as a Secret volume (cert-manager, or
// a person replacing the Secret) updates them in place.
package tlsreload

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// Files is a certificate and key read from files. GetCertificate re-reads
// them when either file changed; a pair that does not load (one file
// written, the other not yet) keeps the previous certificate in use until
// both agree.
type Files struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	certStamp stamp
	keyStamp  stamp
	// LastError is the latest failed reload, nil once a pair loaded.
	lastErr error
}

type stamp struct {
	mod  time.Time
	size int64
}

// Load reads the pair once; it fails if the pair does not load.
func Load(certFile, keyFile string) (*Files, error) {
	f := &Files{certFile: certFile, keyFile: keyFile}
	if err := f.reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Config is a server tls.Config serving the pair, reloaded on change.
func (f *Files) Config() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: f.GetCertificate}
}

// GetCertificate implements tls.Config.GetCertificate.
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cs, cerr := stampOf(f.certFile)
	ks, kerr := stampOf(f.keyFile)
	if cerr == nil && kerr == nil && (cs != f.certStamp || ks != f.keyStamp) {
		if err := f.reloadLocked(); err != nil {
			f.lastErr = err
		}
	}
	return f.cert, nil
}

// LastError is the latest failed reload, nil after a successful one.
func (f *Files) LastError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}

func (f *Files) reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reloadLocked()
}

func (f *Files) reloadLocked() error {
	cs, err := stampOf(f.certFile)
	if err != nil {
		return err
	}
	ks, err := stampOf(f.keyFile)
	if err != nil {
		return err
	}
	pair, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS pair %s, %s: %w", f.certFile, f.keyFile, err)
	}
	f.cert, f.certStamp, f.keyStamp, f.lastErr = &pair, cs, ks, nil
	return nil
}

func stampOf(path string) (stamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{mod: st.ModTime(), size: st.Size()}, nil
}
