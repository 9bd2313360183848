package intake

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/internal/scheme"
)

// NewClusterAdmission returns a PodAdmission over an informer cache of the
// cluster's namespaces and pods — pods stripped to their name, namespace,
// UID and node, so that the cache costs little per pod — and live reads
// through live for pods the cache does not have yet. Start the cache (and
// wait for it to sync) before serving.
func NewClusterAdmission(ctx context.Context, cfg *rest.Config, live client.Reader, excluded []string) (*PodAdmission, cache.Cache, error) {
	c, err := cache.New(cfg, cache.Options{
		Scheme:                      scheme.New(),
		ReaderFailOnMissingInformer: true,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Transform: stripPod},
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("admission cache for %s: %w", cfg.Host, err)
	}
	a := &PodAdmission{Reader: c, Live: live, Excluded: excluded}
	if _, err := c.GetInformer(ctx, &corev1.Namespace{}); err != nil {
		return nil, nil, fmt.Errorf("namespace informer: %w", err)
	}
	inf, err := c.GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		return nil, nil, fmt.Errorf("pod informer: %w", err)
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if p, ok := obj.(*corev1.Pod); ok {
			a.PodDeleted(p)
		}
	}}); err != nil {
		return nil, nil, fmt.Errorf("pod informer: %w", err)
	}
	return a, c, nil
}

// stripPod keeps what admission reads of a pod.
func stripPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion},
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName},
	}, nil
}
