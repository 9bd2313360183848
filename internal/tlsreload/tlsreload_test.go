package tlsreload

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writePair(t *testing.T, dir string, serial int64, mod time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "eddy-analyzer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{"tls.crt": {Type: "CERTIFICATE", Bytes: der}, "tls.key": {Type: "PRIVATE KEY", Bytes: kder}} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
}

// servedSerial makes a real TLS handshake and returns the serial number of
// the certificate the server presented.
func servedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the serial is what is checked
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// A renewed pair written over the files is served by the next handshake,
// without restarting the listener; a half-written renewal keeps the old
// certificate in use.
func TestRenewedCertificateServedWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Minute)
	writePair(t, dir, 1, t0)
	f, err := Load(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", f.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) { _ = c.(*tls.Conn).Handshake(); c.Close() }(c)
		}
	}()
	if got := servedSerial(t, lis.Addr().String()); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}

	// Only the certificate renewed so far: the pair does not match.
	keyBefore, _ := os.ReadFile(filepath.Join(dir, "tls.key"))
	writePair(t, dir, 2, t0.Add(10*time.Second))
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), keyBefore, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, lis.Addr().String()); got != 1 {
		t.Errorf("half-written renewal: serial %d, want the old 1", got)
	}
	if f.LastError() == nil {
		t.Error("a pair that does not load must be reported")
	}

	writePair(t, dir, 3, t0.Add(20*time.Second))
	if got := servedSerial(t, lis.Addr().String()); got != 3 {
		t.Errorf("after renewal: serial %d, want 3", got)
	}
	if err := f.LastError(); err != nil {
		t.Errorf("after a good renewal: %v", err)
	}
}
