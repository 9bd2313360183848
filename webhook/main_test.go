package webhook

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

func TestMain(m *testing.M) {
	// The informer caches log through controller-runtime's global logger;
	// tests keep it quiet (EDDY_TEST_LOG shows the webhook's own logs).
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}
