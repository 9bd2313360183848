package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Keys of the certificate Secret. tls.crt and tls.key are the serving pair
// (the usual kubernetes.io/tls keys); ca.* is the CA that signs it; next-ca
// is a new CA published in the caBundle before it signs anything, prev-ca
// the CA it replaced, kept in the bundle until every replica serves a
// certificate of the new one.
const (
	secretKeyCert    = "tls.crt"
	secretKeyKey     = "tls.key"
	secretKeyCA      = "ca.crt"
	secretKeyCAKey   = "ca.key"
	secretKeyNext    = "next-ca.crt"
	secretKeyNextK   = "next-ca.key"
	secretKeyPrev    = "prev-ca.crt"
	annotationNext   = "eddy.io/next-ca-published"
	annotationPrev   = "eddy.io/prev-ca-until"
	defaultCAValid   = 5 * 365 * 24 * time.Hour
	defaultCertValid = 90 * 24 * time.Hour
)

// CertManager keeps the webhooks' certificates: a self-signed CA and a
// serving certificate in a Secret (created when absent, reused while
// valid), the CA bundle patched into the webhook configurations, and both
// renewed once less than a third of their validity remains. The serving
// certificate is hot-swapped through GetCertificate; a new CA is published
// in the bundle for CAOverlap before it signs, so the API server trusts the
// next certificate before it is served. Several replicas may share the
// Secret: writes use optimistic concurrency and the loser reloads.
type CertManager struct {
	// Client reads and writes the Secret and the webhook configurations
	// (uncached: the Secret must be current).
	Client client.Client
	// Namespace and SecretName locate the Secret.
	Namespace, SecretName string
	// DNSNames and IPAddresses the serving certificate is valid for, e.g.
	// the Service's DNS names, or 127.0.0.1 in tests.
	DNSNames    []string
	IPAddresses []net.IP
	// MutatingWebhookConfiguration and ValidatingWebhookConfiguration name
	// the configurations whose caBundle is kept current ("" skips one).
	MutatingWebhookConfiguration, ValidatingWebhookConfiguration string
	// CAValidity is the CA's lifetime. Zero: five years.
	CAValidity time.Duration
	// CertValidity is the serving certificate's lifetime. Zero: 90 days.
	CertValidity time.Duration
	// CAOverlap is how long a new CA is in the bundle before it signs, and
	// the old one after. Zero: one minute.
	CAOverlap time.Duration
	// CheckInterval is how often Run re-checks. Zero: a tenth of
	// CertValidity, at most one minute.
	CheckInterval time.Duration
	// Metrics are updated on issue; nil updates none.
	Metrics *Metrics
	// Log receives one line per certificate issued and per failed check.
	Log logr.Logger

	current atomic.Pointer[tls.Certificate]
}

func (m *CertManager) caValidity() time.Duration {
	if m.CAValidity > 0 {
		return m.CAValidity
	}
	return defaultCAValid
}

func (m *CertManager) certValidity() time.Duration {
	if m.CertValidity > 0 {
		return m.CertValidity
	}
	return defaultCertValid
}

func (m *CertManager) overlap() time.Duration {
	if m.CAOverlap > 0 {
		return m.CAOverlap
	}
	return time.Minute
}

func (m *CertManager) interval() time.Duration {
	if m.CheckInterval > 0 {
		return m.CheckInterval
	}
	return min(m.certValidity()/10, time.Minute)
}

// GetCertificate returns the serving certificate in use; it is the
// tls.Config hook, so a renewed certificate is served without a restart.
func (m *CertManager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := m.current.Load()
	if c == nil {
		return nil, errors.New("eddy webhook: no serving certificate yet")
	}
	return c, nil
}

// Ready reports whether a serving certificate is loaded.
func (m *CertManager) Ready() bool { return m.current.Load() != nil }

// Run syncs at once, then every CheckInterval until ctx ends. A failed
// sync is logged and retried; the certificate in use stays in use.
func (m *CertManager) Run(ctx context.Context) {
	t := time.NewTicker(m.interval())
	defer t.Stop()
	for {
		if err := m.Sync(ctx); err != nil && ctx.Err() == nil {
			m.Log.Error(err, "certificate sync failed; retrying", "secret", m.Namespace+"/"+m.SecretName)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// keyPair is a parsed certificate and its PEM.
type keyPair struct {
	cert    *x509.Certificate
	certPEM []byte
	keyPEM  []byte
}

type certState struct {
	ca, next, cert *keyPair
	prev           []byte
	nextSince      time.Time
	prevUntil      time.Time
}

// errRaced is a write that lost to another replica's.
var errRaced = errors.New("certificate secret changed concurrently")

// Sync brings the Secret, the caBundles and the certificate in use up to
// date, issuing what is missing, invalid or due for renewal.
func (m *CertManager) Sync(ctx context.Context) error {
	for range 3 {
		if err := m.syncOnce(ctx); !errors.Is(err, errRaced) {
			return err
		}
	}
	return fmt.Errorf("secret %s/%s: %w three times in a row", m.Namespace, m.SecretName, errRaced)
}

func (m *CertManager) syncOnce(ctx context.Context) error {
	now := time.Now()
	secret := &corev1.Secret{}
	err := m.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.SecretName}, secret)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("read certificate secret %s/%s: %w", m.Namespace, m.SecretName, err)
	}
	st := m.parse(secret)
	changed, err := m.plan(&st, now)
	if err != nil {
		return err
	}
	if changed {
		m.store(secret, st)
		if exists {
			err = m.Client.Update(ctx, secret)
		} else {
			secret.Namespace, secret.Name = m.Namespace, m.SecretName
			err = m.Client.Create(ctx, secret)
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			// Another replica renewed first: use what it wrote.
			return errRaced
		}
		if err != nil {
			return fmt.Errorf("write certificate secret %s/%s: %w", m.Namespace, m.SecretName, err)
		}
	}
	bundle := slices.Concat(st.ca.certPEM, nextPEM(st), st.prev)
	if err := m.patchCABundles(ctx, bundle); err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(st.cert.certPEM, st.cert.keyPEM)
	if err != nil {
		return fmt.Errorf("load serving certificate from %s/%s: %w", m.Namespace, m.SecretName, err)
	}
	if old := m.current.Load(); old == nil || !bytes.Equal(old.Certificate[0], pair.Certificate[0]) {
		m.current.Store(&pair)
		m.Log.Info("serving certificate loaded", "serial", st.cert.cert.SerialNumber.Text(16), "notAfter", st.cert.cert.NotAfter)
	}
	if m.Metrics != nil {
		m.Metrics.CertExpiry.Set(float64(st.cert.cert.NotAfter.Unix()))
	}
	return nil
}

func nextPEM(st certState) []byte {
	if st.next == nil {
		return nil
	}
	return st.next.certPEM
}

// plan decides what to issue; it changes st and reports whether it did.
func (m *CertManager) plan(st *certState, now time.Time) (bool, error) {
	changed := false
	issueCA := func() (*keyPair, error) {
		ca, err := newCA(now, m.caValidity())
		if err == nil && m.Metrics != nil {
			m.Metrics.CertRotations.WithLabelValues("ca").Inc()
		}
		return ca, err
	}
	var err error
	switch {
	case st.ca == nil || now.After(st.ca.cert.NotAfter) || now.Before(st.ca.cert.NotBefore):
		if st.ca, err = issueCA(); err != nil {
			return false, err
		}
		st.next, st.cert, st.prev = nil, nil, nil
		m.Log.Info("new CA issued", "notAfter", st.ca.cert.NotAfter)
		changed = true
	case st.next != nil && now.Sub(st.nextSince) >= m.overlap():
		st.prev, st.prevUntil = st.ca.certPEM, now.Add(m.overlap())
		st.ca, st.next, st.cert = st.next, nil, nil
		m.Log.Info("next CA now signs", "notAfter", st.ca.cert.NotAfter)
		changed = true
	case st.next == nil && renewDue(st.ca.cert, now, m.caValidity()):
		if st.next, err = issueCA(); err != nil {
			return false, err
		}
		st.nextSince = now
		m.Log.Info("next CA published in the caBundle", "signsFrom", now.Add(m.overlap()))
		changed = true
	}
	if st.prev != nil && now.After(st.prevUntil) {
		st.prev = nil
		changed = true
	}
	if st.cert == nil || renewDue(st.cert.cert, now, m.certValidity()) || !m.fits(st.cert.cert, st.ca.cert) {
		if st.cert, err = issueServing(st.ca, now, m.certValidity(), m.DNSNames, m.IPAddresses); err != nil {
			return false, err
		}
		if m.Metrics != nil {
			m.Metrics.CertRotations.WithLabelValues("serving").Inc()
		}
		m.Log.Info("serving certificate issued", "notAfter", st.cert.cert.NotAfter, "dnsNames", m.DNSNames)
		changed = true
	}
	return changed, nil
}

// renewDue: less than a third of the configured validity remains, or the
// certificate outlives the configured validity (it was shortened).
func renewDue(c *x509.Certificate, now time.Time, validity time.Duration) bool {
	left := c.NotAfter.Sub(now)
	return left < validity/3 || left > validity+time.Minute
}

// fits reports whether the serving certificate is signed by ca and names
// every DNS name and IP address wanted.
func (m *CertManager) fits(c, ca *x509.Certificate) bool {
	if c.CheckSignatureFrom(ca) != nil {
		return false
	}
	for _, d := range m.DNSNames {
		if !slices.Contains(c.DNSNames, d) {
			return false
		}
	}
	for _, ip := range m.IPAddresses {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// parse reads what the Secret holds; anything unreadable counts as absent
// and is issued again.
func (m *CertManager) parse(s *corev1.Secret) certState {
	var st certState
	pair := func(certKey, keyKey string) *keyPair {
		cp, kp := s.Data[certKey], s.Data[keyKey]
		if len(cp) == 0 || len(kp) == 0 {
			return nil
		}
		if _, err := tls.X509KeyPair(cp, kp); err != nil {
			m.Log.Info("ignoring unreadable certificate in secret", "key", certKey, "error", err.Error())
			return nil
		}
		block, _ := pem.Decode(cp)
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil
		}
		return &keyPair{cert: c, certPEM: cp, keyPEM: kp}
	}
	st.ca = pair(secretKeyCA, secretKeyCAKey)
	st.cert = pair(secretKeyCert, secretKeyKey)
	if st.ca != nil {
		st.next = pair(secretKeyNext, secretKeyNextK)
		if t, err := time.Parse(time.RFC3339Nano, s.Annotations[annotationNext]); err == nil {
			st.nextSince = t
		} else {
			st.nextSince = time.Now()
		}
		if p := s.Data[secretKeyPrev]; len(p) > 0 {
			if t, err := time.Parse(time.RFC3339Nano, s.Annotations[annotationPrev]); err == nil {
				st.prev, st.prevUntil = p, t
			}
		}
	}
	return st
}

func (m *CertManager) store(s *corev1.Secret, st certState) {
	if s.Type == "" {
		s.Type = corev1.SecretTypeOpaque
	}
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	s.Labels["app.kubernetes.io/name"] = "eddy"
	s.Labels["app.kubernetes.io/component"] = "webhook"
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Data = map[string][]byte{
		secretKeyCA: st.ca.certPEM, secretKeyCAKey: st.ca.keyPEM,
		secretKeyCert: st.cert.certPEM, secretKeyKey: st.cert.keyPEM,
	}
	delete(s.Annotations, annotationNext)
	delete(s.Annotations, annotationPrev)
	if st.next != nil {
		s.Data[secretKeyNext], s.Data[secretKeyNextK] = st.next.certPEM, st.next.keyPEM
		s.Annotations[annotationNext] = st.nextSince.UTC().Format(time.RFC3339Nano)
	}
	if st.prev != nil {
		s.Data[secretKeyPrev] = st.prev
		s.Annotations[annotationPrev] = st.prevUntil.UTC().Format(time.RFC3339Nano)
	}
}

// patchCABundles sets caBundle on every webhook of both configurations
// where it differs. A configuration that does not exist yet is skipped
// (it is patched on a later check once it has been applied).
func (m *CertManager) patchCABundles(ctx context.Context, bundle []byte) error {
	if name := m.MutatingWebhookConfiguration; name != "" {
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := m.Client.Get(ctx, client.ObjectKey{Name: name}, cfg); err != nil {
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("read MutatingWebhookConfiguration %s: %w", name, err)
			}
			m.Log.V(1).Info("MutatingWebhookConfiguration not found; caBundle not patched", "name", name)
		} else {
			patch := client.MergeFrom(cfg.DeepCopy())
			dirty := false
			for i := range cfg.Webhooks {
				if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, bundle) {
					cfg.Webhooks[i].ClientConfig.CABundle, dirty = bundle, true
				}
			}
			if dirty {
				if err := m.Client.Patch(ctx, cfg, patch); err != nil {
					return fmt.Errorf("patch caBundle into MutatingWebhookConfiguration %s: %w", name, err)
				}
			}
		}
	}
	if name := m.ValidatingWebhookConfiguration; name != "" {
		cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := m.Client.Get(ctx, client.ObjectKey{Name: name}, cfg); err != nil {
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("read ValidatingWebhookConfiguration %s: %w", name, err)
			}
			m.Log.V(1).Info("ValidatingWebhookConfiguration not found; caBundle not patched", "name", name)
		} else {
			patch := client.MergeFrom(cfg.DeepCopy())
			dirty := false
			for i := range cfg.Webhooks {
				if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, bundle) {
					cfg.Webhooks[i].ClientConfig.CABundle, dirty = bundle, true
				}
			}
			if dirty {
				if err := m.Client.Patch(ctx, cfg, patch); err != nil {
					return fmt.Errorf("patch caBundle into ValidatingWebhookConfiguration %s: %w", name, err)
				}
			}
		}
	}
	return nil
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
}

// skew backdates certificates a little, for clocks slightly behind.
func skew(validity time.Duration) time.Duration { return min(time.Minute, validity/10) }

func newCA(now time.Time, validity time.Duration) (*keyPair, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("eddy-webhook-ca@%d", now.Unix()), Organization: []string{"eddy"}},
		NotBefore:             now.Add(-skew(validity)),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: c, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM: keyPEM}, nil
}

func issueServing(ca *keyPair, now time.Time, validity time.Duration, dnsNames []string, ips []net.IP) (*keyPair, error) {
	caKey, err := parseKey(ca.keyPEM)
	if err != nil {
		return nil, err
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	cn := "eddy-webhook"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"eddy"}},
		NotBefore:    now.Add(-skew(validity)),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("create serving certificate for %v %v: %w", dnsNames, ips, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: c, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM: keyPEM}, nil
}

func parseKey(keyPEM []byte) (any, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("CA key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	return k, nil
}
