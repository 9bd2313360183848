package controlplane

import (
	"fmt"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// AddUser provisions a user the API server authenticates (a client
// certificate) with the given groups, and returns a config that acts as that
// user. It grants nothing: bind roles to the user to authorize it. Admission
// webhook tests use it to see requests from real, differently authorized
// users (their UserInfo reaches the webhook unchanged).
func (e *Env) AddUser(name string, groups ...string) (*rest.Config, error) {
	u, err := e.testEnv.AddUser(envtest.User{Name: name, Groups: groups}, &rest.Config{QPS: e.Config.QPS, Burst: e.Config.Burst})
	if err != nil {
		return nil, fmt.Errorf("add user %s: %w", name, err)
	}
	return u.Config(), nil
}
