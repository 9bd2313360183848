// Package scheme builds the runtime.Scheme eddy's components talk to the API
// server with: client-go's built-in types and eddy.io/v1alpha1.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// New returns a scheme with client-go's types and eddy's.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err) // static registrations; cannot fail
	}
	if err := eddyv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
