package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// Cache is the webhook's view of the cluster, bounded by what is opted in.
// Namespaces, Recommendations and AutotunePolicies are cached cluster-wide:
// there are few namespaces, and recommendations and policies exist only
// where eddy works. The metadata of Pods, ReplicaSets and Jobs (the pods the
// MissCounter counts and the owners most of them have) is cached only in the
// namespaces the webhook serves (see Serves): a set of informers per
// namespace, started when the namespace is labelled
// eddy.io/autotune=enabled and stopped when the label goes or the namespace
// is deleted, so that pods of namespaces not opted in are never listed,
// watched or held. Every cached object is stripped to what the webhook reads
// (see stripMetadata).
//
// Get and List of those three kinds in a namespace whose informers are not
// synced (just opted in, or not opted in) return an error for which
// IsNotCached holds: the workload resolver then reads the owner from the API
// server (NewWorkloadResolver). Other kinds are not cached; reading them is
// an error too.
type Cache struct {
	cluster       cache.Cache
	scheme        *runtime.Scheme
	cfg           *rest.Config
	httpClient    *http.Client
	mapper        meta.RESTMapper
	eddyNamespace string
	log           logr.Logger
	nsEvents      toolscache.ResourceEventHandlerRegistration

	mu     sync.Mutex
	ctx    context.Context // set by Start; the namespaces' informers stop with it
	spaces map[string]*namespaceCache
}

// namespaceCache holds the namespaced kinds of one served namespace.
type namespaceCache struct {
	cache  cache.Cache
	stop   context.CancelFunc
	synced atomic.Bool
	done   chan struct{} // closed when the first sync ended, synced or not
}

// errNotCached is what Get and List return for a namespace whose informers
// are not (yet) synced.
var errNotCached = errors.New("not in the webhook's cache")

// IsNotCached reports whether err says that the object's namespace is not
// cached (not served, or its informers not synced yet).
func IsNotCached(err error) bool { return errors.Is(err, errNotCached) }

// namespacedKinds are cached per served namespace, as metadata only.
var namespacedKinds = []schema.GroupVersionKind{
	corev1.SchemeGroupVersion.WithKind("Pod"),
	appsv1.SchemeGroupVersion.WithKind("ReplicaSet"),
	batchv1.SchemeGroupVersion.WithKind("Job"),
}

// keptAnnotations are the only annotations a cached object keeps: those the
// MissCounter reads on pods. Owners are resolved from labels, names and
// owner references alone.
var keptAnnotations = []string{eddyv1alpha1.InjectedAnnotation, MirrorPodAnnotation}

// Serves reports whether the webhook injects pods of the namespace: labelled
// eddy.io/autotune=enabled, and neither kube-system nor eddy's own.
func Serves(ns *corev1.Namespace, eddyNamespace string) bool {
	return ns.Labels[eddyv1alpha1.AutotuneLabel] == eddyv1alpha1.AutotuneEnabled && ns.Name != "kube-system" && ns.Name != eddyNamespace
}

// NewCache returns the webhook's cache; eddyNamespace is never served.
// Start runs it.
func NewCache(cfg *rest.Config, eddyNamespace string, log logr.Logger) (*Cache, error) {
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("HTTP client for %s: %w", cfg.Host, err)
	}
	// One HTTP client and one mapper for every namespace's informers: their
	// watches share the connections, and discovery runs once.
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("REST mapper for %s: %w", cfg.Host, err)
	}
	scheme := Scheme()
	cluster, err := cache.New(cfg, cache.Options{
		Scheme: scheme, HTTPClient: httpClient, Mapper: mapper, ReaderFailOnMissingInformer: true,
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject:         map[client.Object]cache.ByObject{&corev1.Namespace{}: {Transform: stripMetadata}},
	})
	if err != nil {
		return nil, fmt.Errorf("cache for %s: %w", cfg.Host, err)
	}
	c := &Cache{cluster: cluster, scheme: scheme, cfg: cfg, httpClient: httpClient, mapper: mapper, eddyNamespace: eddyNamespace, log: log, spaces: map[string]*namespaceCache{}}
	for _, obj := range []client.Object{&eddyv1alpha1.Recommendation{}, &eddyv1alpha1.AutotunePolicy{}} {
		if _, err := cluster.GetInformer(context.Background(), obj); err != nil {
			return nil, fmt.Errorf("informer for %T: %w", obj, err)
		}
	}
	namespaces, err := cluster.GetInformer(context.Background(), &corev1.Namespace{})
	if err != nil {
		return nil, fmt.Errorf("informer for namespaces: %w", err)
	}
	c.nsEvents, err = namespaces.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.follow(obj) },
		UpdateFunc: func(_, obj any) { c.follow(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if ns, ok := obj.(*corev1.Namespace); ok {
				c.drop(ns.Name)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("follow namespaces: %w", err)
	}
	return c, nil
}

// Start runs the informers until ctx ends.
func (c *Cache) Start(ctx context.Context) error {
	c.mu.Lock()
	c.ctx = ctx
	c.mu.Unlock()
	return c.cluster.Start(ctx)
}

// WaitForCacheSync waits until the cluster-wide informers have synced, and
// then the informers of every namespace served at that point. It returns
// false when ctx ends first.
func (c *Cache) WaitForCacheSync(ctx context.Context) bool {
	if !c.cluster.WaitForCacheSync(ctx) || !toolscache.WaitForCacheSync(ctx.Done(), c.nsEvents.HasSynced) {
		return false
	}
	c.mu.Lock()
	spaces := make([]*namespaceCache, 0, len(c.spaces))
	for _, s := range c.spaces {
		spaces = append(spaces, s)
	}
	c.mu.Unlock()
	for _, s := range spaces {
		select {
		case <-s.done:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// Namespaces are the namespaces whose pods, ReplicaSets and Jobs are
// cached, synced or not, sorted.
func (c *Cache) Namespaces() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.spaces))
	for ns := range c.spaces {
		out = append(out, ns)
	}
	slices.Sort(out)
	return out
}

// Get reads one object from the cache.
func (c *Cache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	r, err := c.reader(obj, key.Namespace)
	if err != nil {
		return err
	}
	return r.Get(ctx, key, obj, opts...)
}

// List lists objects from the cache. Pods, ReplicaSets and Jobs are listed
// in one namespace only (client.InNamespace); a namespace whose informers
// are syncing is waited for.
func (c *Cache) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	gvk, err := apiutil.GVKForObject(list, c.scheme)
	if err != nil {
		return err
	}
	gvk.Kind = strings.TrimSuffix(gvk.Kind, "List")
	if !slices.Contains(namespacedKinds, gvk) {
		return c.cluster.List(ctx, list, opts...)
	}
	lo := (&client.ListOptions{}).ApplyOptions(opts)
	if lo.Namespace == "" {
		return fmt.Errorf("list %s: the webhook caches them per namespace; name one: %w", gvk.Kind, errNotCached)
	}
	s := c.space(lo.Namespace)
	if s == nil {
		return fmt.Errorf("list %s in %s: %w", gvk.Kind, lo.Namespace, errNotCached)
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		return fmt.Errorf("list %s in %s: waiting for its informers: %w", gvk.Kind, lo.Namespace, ctx.Err())
	}
	if !s.synced.Load() {
		return fmt.Errorf("list %s in %s: %w", gvk.Kind, lo.Namespace, errNotCached)
	}
	return s.cache.List(ctx, list, opts...)
}

// reader is where obj of namespace ns is read from.
func (c *Cache) reader(obj client.Object, ns string) (client.Reader, error) {
	gvk, err := apiutil.GVKForObject(obj, c.scheme)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(namespacedKinds, gvk) {
		return c.cluster, nil
	}
	if s := c.space(ns); s != nil && s.synced.Load() {
		return s.cache, nil
	}
	return nil, fmt.Errorf("%s %s: %w", gvk.Kind, ns, errNotCached)
}

func (c *Cache) space(ns string) *namespaceCache {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spaces[ns]
}

// follow starts or stops the informers of a namespace as its label says.
func (c *Cache) follow(obj any) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return
	}
	if !Serves(ns, c.eddyNamespace) || ns.Status.Phase == corev1.NamespaceTerminating {
		c.drop(ns.Name)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.spaces[ns.Name]; ok || c.ctx == nil || c.ctx.Err() != nil {
		return
	}
	s, err := c.startNamespace(ns.Name)
	if err != nil {
		// Its owners are then read from the API server, and its pods not
		// counted by the MissCounter, until the namespace changes again.
		c.log.Error(err, "caching a namespace that was opted in", "namespace", ns.Name)
		return
	}
	c.spaces[ns.Name] = s
	c.log.V(1).Info("caching namespace", "namespace", ns.Name)
}

// startNamespace starts the informers of one namespace; c.mu is held.
func (c *Cache) startNamespace(ns string) (*namespaceCache, error) {
	nc, err := cache.New(c.cfg, cache.Options{
		Scheme: c.scheme, HTTPClient: c.httpClient, Mapper: c.mapper, ReaderFailOnMissingInformer: true,
		DefaultNamespaces: map[string]cache.Config{ns: {}},
		DefaultTransform:  stripMetadata,
	})
	if err != nil {
		return nil, err
	}
	for _, gvk := range namespacedKinds {
		if _, err := nc.GetInformer(c.ctx, metadataOf(gvk)); err != nil {
			return nil, fmt.Errorf("informer for %s in %s: %w", gvk.Kind, ns, err)
		}
	}
	ctx, stop := context.WithCancel(c.ctx)
	s := &namespaceCache{cache: nc, stop: stop, done: make(chan struct{})}
	go func() {
		if err := nc.Start(ctx); err != nil && ctx.Err() == nil {
			c.log.Error(err, "informers of a namespace stopped", "namespace", ns)
		}
	}()
	go func() {
		defer close(s.done)
		s.synced.Store(nc.WaitForCacheSync(ctx))
	}()
	return s, nil
}

// drop stops the informers of a namespace no longer served.
func (c *Cache) drop(ns string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.spaces[ns]; ok {
		s.stop()
		delete(c.spaces, ns)
		c.log.V(1).Info("no longer caching namespace", "namespace", ns)
	}
}

// stripMetadata drops what the webhook never reads from a cached object:
// its managedFields, and every annotation but keptAnnotations.
func stripMetadata(in any) (any, error) {
	obj, err := meta.Accessor(in)
	if err != nil {
		return in, nil
	}
	if obj.GetManagedFields() != nil {
		obj.SetManagedFields(nil)
	}
	if a := obj.GetAnnotations(); len(a) > 0 {
		var kept map[string]string
		for _, k := range keptAnnotations {
			if v, ok := a[k]; ok {
				if kept == nil {
					kept = map[string]string{}
				}
				kept[k] = v
			}
		}
		obj.SetAnnotations(kept)
	}
	return in, nil
}

// metadataOf is an object whose informer caches only metadata.
func metadataOf(gvk schema.GroupVersionKind) client.Object {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gvk)
	return m
}
