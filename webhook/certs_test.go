package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/test/controlplane"
)

// TestCertManager runs the certificate lifecycle against a real API
// server: create when absent, reuse across restarts, reissue what is
// unreadable or no longer fits, and patch the caBundle of both
// configurations.
func TestCertManager(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx := context.Background()
	c, err := client.New(env.Config, client.Options{Scheme: Scheme()})
	require.NoError(t, err)
	mustCreate(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}})
	none := admissionregistrationv1.SideEffectClassNone
	url := "https://127.0.0.1:1/x"
	mustCreate(t, c, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "m"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "a.eddy.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url}, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}}},
	})
	mustCreate(t, c, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "v"},
		Webhooks:   []admissionregistrationv1.ValidatingWebhook{{Name: "b.eddy.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url}, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}}},
	})
	manager := func() *CertManager {
		return &CertManager{Client: c, Namespace: testNamespace, SecretName: "certs",
			DNSNames: []string{"eddy-webhook.eddy-system.svc"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			MutatingWebhookConfiguration: "m", ValidatingWebhookConfiguration: "v", Log: logr.Discard()}
	}
	secret := func() *corev1.Secret {
		s := &corev1.Secret{}
		require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: "certs"}, s))
		return s
	}

	first := manager()
	require.NoError(t, first.Sync(ctx))
	s1 := secret()
	leaf := parseCert(t, s1.Data["tls.crt"])
	ca := parseCert(t, s1.Data["ca.crt"])
	require.NoError(t, leaf.CheckSignatureFrom(ca))
	assert.Contains(t, leaf.DNSNames, "eddy-webhook.eddy-system.svc")
	assert.True(t, leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)))
	assert.InDelta(t, 90*24*time.Hour, time.Until(leaf.NotAfter), float64(time.Hour))
	served, err := first.GetCertificate(nil)
	require.NoError(t, err)
	assert.Equal(t, leaf.Raw, served.Certificate[0])

	var m admissionregistrationv1.MutatingWebhookConfiguration
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "m"}, &m))
	assert.Equal(t, s1.Data["ca.crt"], m.Webhooks[0].ClientConfig.CABundle)
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "v"}, &v))
	assert.Equal(t, s1.Data["ca.crt"], v.Webhooks[0].ClientConfig.CABundle)

	// A restarted replica reuses what is valid.
	restarted := manager()
	require.NoError(t, restarted.Sync(ctx))
	s2 := secret()
	assert.Equal(t, s1.ResourceVersion, s2.ResourceVersion, "nothing rewritten")
	served, err = restarted.GetCertificate(nil)
	require.NoError(t, err)
	assert.Equal(t, leaf.Raw, served.Certificate[0])

	// An unreadable serving certificate is reissued under the same CA.
	s2.Data["tls.crt"] = []byte("garbage")
	require.NoError(t, c.Update(ctx, s2))
	require.NoError(t, restarted.Sync(ctx))
	s3 := secret()
	assert.Equal(t, s1.Data["ca.crt"], s3.Data["ca.crt"], "CA kept")
	assert.NotEqual(t, s1.Data["tls.crt"], s3.Data["tls.crt"])

	// A new name for the Service: the serving certificate is reissued to fit.
	renamed := manager()
	renamed.DNSNames = append(renamed.DNSNames, "eddy.example")
	require.NoError(t, renamed.Sync(ctx))
	assert.Contains(t, parseCert(t, secret().Data["tls.crt"]).DNSNames, "eddy.example")

	// A shorter validity reissues the certificate at once; a CA due for
	// renewal is first only published in the bundle next to the old one.
	short := manager()
	short.CAValidity, short.CertValidity, short.CAOverlap = time.Hour, 10*time.Minute, time.Hour
	require.NoError(t, short.Sync(ctx))
	s4 := secret()
	assert.Less(t, time.Until(parseCert(t, s4.Data["tls.crt"]).NotAfter), 11*time.Minute)
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "m"}, &m))
	assert.Equal(t, 2, bytes.Count(m.Webhooks[0].ClientConfig.CABundle, []byte("BEGIN CERTIFICATE")), "old and next CA both trusted")
	require.NoError(t, parseCert(t, s4.Data["tls.crt"]).CheckSignatureFrom(ca), "the old CA still signs during the overlap")
}

func parseCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	require.NotNil(t, block, "no PEM in %q", data)
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return c
}
