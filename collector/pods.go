package collector

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/collector/cgroups"
)

// PodContainer is one container of an observed pod, with the cgroup its
// processes run in (the container's own, or one nested in it).
type PodContainer struct {
	Pod         *corev1.Pod
	Container   string
	ContainerID string
	CgroupID    uint64
}

// PodIndex watches the pods on one node and the namespaces, keeps the
// source's allow-list equal to the cgroups of the opted-in pods' containers,
// and answers which container a cgroup id belongs to. Containers that went
// away stay answerable for Retain, so the last records drained after a pod
// ended are still attributed to it.
type PodIndex struct {
	node     string
	source   Source
	resolver *cgroups.Resolver
	log      logr.Logger
	retain   time.Duration
	resync   time.Duration
	now      func() time.Time

	factory    informers.SharedInformerFactory
	nsFactory  informers.SharedInformerFactory
	podLister  listersv1.PodLister
	nsLister   listersv1.NamespaceLister
	podsSynced cache.InformerSynced
	nsSynced   cache.InformerSynced
	kick       chan struct{}

	mu      sync.RWMutex
	allowed map[uint64]*PodContainer
	// trees are the pods' own cgroups allowed with AllowTree, by pod UID:
	// the kernel allows each container cgroup created under them as it is
	// created.
	trees map[types.UID]podTree
	// silenced are the cgroups of eddy's own containers, disallowed once
	// named (the kernel may have allowed them under their pod's tree).
	silenced map[uint64]bool
	retired  map[uint64]retiredContainer
	// pending counts opted-in containers whose cgroup was not found.
	pending int
	// starting counts opted-in pods whose containers are not all named in
	// their status yet; while there are any, Run syncs every startingRescan.
	starting int
	// learner decides whether an opted-in pod is observed; decided holds
	// each pod's decision for its life (see Learner); synced is set after
	// the first Sync: pods found running then are observed, since whether
	// they were before the collector (re)started is not known.
	learner Learner
	decided map[types.UID]bool
	synced  bool
	// resting counts opted-in pods not observed because their workload rests.
	resting int
}

// startingRescan is how often the allow-list is synced, walking the cgroup
// hierarchy, while an opted-in pod starts: a container's first reads are
// missed for at most about this long.
const startingRescan = 100 * time.Millisecond

type podTree struct {
	cgroupID uint64
	pod      *corev1.Pod
}

type retiredContainer struct {
	pc    *PodContainer
	since time.Time
}

// PodIndexOptions configure a PodIndex. Zero values pick the defaults.
type PodIndexOptions struct {
	// Node is the node whose pods are watched (spec.nodeName). Required.
	Node string
	// Retain is how long a container stays attributable after it left the
	// allow-list (default 2 minutes; at least one drain interval).
	Retain time.Duration
	// Resync is how often the allow-list is recomputed without a change in
	// the API (default 5s): container cgroups appear after pod status says
	// the container exists, and the cgroup walk is rate-limited.
	Resync time.Duration
	// Learner decides which opted-in pods are observed (nil: all are).
	Learner Learner
	Log     logr.Logger
}

// NewPodIndex returns a PodIndex for the node's pods. Call Run to start it.
func NewPodIndex(cs kubernetes.Interface, source Source, resolver *cgroups.Resolver, opts PodIndexOptions) (*PodIndex, error) {
	if opts.Node == "" {
		return nil, fmt.Errorf("pod index: node name is empty: set --node-name or NODE_NAME")
	}
	if opts.Retain == 0 {
		opts.Retain = 2 * time.Minute
	}
	if opts.Resync == 0 {
		opts.Resync = 5 * time.Second
	}
	p := &PodIndex{
		node: opts.Node, source: source, resolver: resolver, log: opts.Log,
		retain: opts.Retain, resync: opts.Resync, now: time.Now,
		kick:     make(chan struct{}, 1),
		allowed:  map[uint64]*PodContainer{},
		trees:    map[types.UID]podTree{},
		silenced: map[uint64]bool{},
		retired:  map[uint64]retiredContainer{},
		learner:  opts.Learner,
		decided:  map[types.UID]bool{},
	}
	p.factory = informers.NewSharedInformerFactoryWithOptions(cs, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", opts.Node).String()
		}))
	p.nsFactory = informers.NewSharedInformerFactory(cs, 0)
	pods := p.factory.Core().V1().Pods()
	nss := p.nsFactory.Core().V1().Namespaces()
	p.podLister, p.nsLister = pods.Lister(), nss.Lister()
	p.podsSynced, p.nsSynced = pods.Informer().HasSynced, nss.Informer().HasSynced
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.Kick() },
		UpdateFunc: func(any, any) { p.Kick() },
		DeleteFunc: func(any) { p.Kick() },
	}
	if _, err := pods.Informer().AddEventHandler(handler); err != nil {
		return nil, fmt.Errorf("pod index: watch pods: %w", err)
	}
	if _, err := nss.Informer().AddEventHandler(handler); err != nil {
		return nil, fmt.Errorf("pod index: watch namespaces: %w", err)
	}
	return p, nil
}

// Kick asks for an allow-list sync soon.
func (p *PodIndex) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run starts the informers, waits for their caches and keeps the allow-list
// in sync until ctx ends. It returns an error only if the caches never sync.
func (p *PodIndex) Run(ctx context.Context) error {
	p.factory.Start(ctx.Done())
	p.nsFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), p.podsSynced, p.nsSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("pod index: pod and namespace caches did not sync for node %q: %w", p.node, ctx.Err())
	}
	p.Sync()
	t := time.NewTimer(p.resync)
	defer t.Stop()
	for {
		p.mu.RLock()
		next := p.resync
		if p.starting > 0 || p.pending > 0 {
			// A pod starting, or a container named whose cgroup was not
			// found yet (the walk behind ContainerCgroups stays rate
			// limited): look again soon.
			next = startingRescan
		}
		p.mu.RUnlock()
		t.Reset(next)
		select {
		case <-ctx.Done():
			p.factory.Shutdown()
			p.nsFactory.Shutdown()
			return nil
		case <-p.kick:
		case <-t.C:
		}
		p.Sync()
	}
}

// Synced reports whether the informers have their first full listing.
func (p *PodIndex) Synced() bool { return p.podsSynced() && p.nsSynced() }

// Sync recomputes the allow-list from the informers' caches and applies the
// difference to the source.
func (p *PodIndex) Sync() {
	pods, err := p.podLister.List(labels.Everything())
	if err != nil {
		p.log.Error(err, "list pods from cache")
		return
	}
	enabled := map[string]bool{}
	nss, err := p.nsLister.List(labels.Everything())
	if err != nil {
		p.log.Error(err, "list namespaces from cache")
		return
	}
	for _, ns := range nss {
		enabled[ns.Name] = NamespaceOptedIn(ns)
	}
	want := map[uint64]*PodContainer{}
	wantTrees := map[types.UID]podTree{}
	// eddy's own containers, once named: cgroups observed before that are
	// dropped without staying attributable.
	eddys := map[string]bool{}
	eddyCgroups := map[uint64]bool{}
	p.mu.RLock()
	known := make(map[types.UID]uint64, len(p.trees))
	for uid, t := range p.trees {
		known[uid] = t.cgroupID
	}
	p.mu.RUnlock()
	pending, starting, resting := 0, 0, 0
	decided := p.decide(pods, enabled)
	for _, pod := range pods {
		if pod.Spec.NodeName != p.node || !enabled[pod.Namespace] || !PodOptedIn(pod) {
			continue
		}
		if !decided[pod.UID] {
			resting++
			continue
		}
		for _, st := range statuses(pod) {
			if _, id, err := cgroups.SplitContainerID(st.ContainerID); err == nil && injectedByEddy(pod, st.Name) {
				eddys[id] = true
				if es, ok := p.resolver.ContainerCgroups(id); ok {
					for _, e := range es {
						eddyCgroups[e.ID] = true
					}
				}
			}
		}
		if pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
			// The pod's own cgroup, as soon as the kubelet made it: its
			// containers are then recorded from their creation.
			if id, ok := known[pod.UID]; ok {
				wantTrees[pod.UID] = podTree{id, pod}
			} else if id, ok := p.resolver.PodCgroupID(string(pod.UID), startingRescan); ok {
				wantTrees[pod.UID] = podTree{id, pod}
			}
		}
		isStarting := podStarting(pod)
		if isStarting {
			starting++
		}
		if isStarting && eddysNamed(pod) {
			// Its containers run (and read) before the pod's status names
			// them: observe every container cgroup under the pod now, and
			// attribute each to its container once the status says which
			// it is. Only once eddy's own containers are named, so that an
			// unnamed cgroup is never one of them.
			named := statusContainerIDs(pod)
			for _, e := range p.resolver.PodCgroups(string(pod.UID), startingRescan) {
				if !named[e.ContainerID] {
					want[e.ID] = &PodContainer{Pod: pod, ContainerID: e.ContainerID, CgroupID: e.ID}
				}
			}
		}
		for _, c := range ContainerIDs(pod) {
			es, ok := p.resolver.ContainerCgroups(c.ID)
			if _, observed := wantTrees[pod.UID]; !ok && observed {
				// The kernel records it already (its cgroup was made under
				// the pod's): look for it now, not at the next walk the rate
				// limit allows, so its reads are attributed sooner.
				es, ok = p.resolver.FreshContainerCgroups(c.ID, startingRescan)
			}
			if !ok {
				pending++
				continue
			}
			if es[0].PodUID != string(pod.UID) {
				p.log.Info("container cgroup belongs to another pod; ignoring it", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "cgroup", es[0].Path)
				continue
			}
			for _, e := range es {
				want[e.ID] = &PodContainer{Pod: pod, Container: c.Name, ContainerID: c.ID, CgroupID: e.ID}
			}
		}
	}

	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending, p.starting, p.resting = pending, starting, resting
	for uid, t := range wantTrees {
		if _, ok := p.trees[uid]; !ok {
			if err := p.source.AllowTree(t.cgroupID); err != nil {
				p.log.Error(err, "allow pod cgroup", "cgroupID", t.cgroupID, "pod", t.pod.Namespace+"/"+t.pod.Name)
				continue
			}
			p.log.V(1).Info("observing pod", "pod", t.pod.Namespace+"/"+t.pod.Name, "cgroupID", t.cgroupID)
		}
		p.trees[uid] = t
	}
	for uid, t := range p.trees {
		if _, ok := wantTrees[uid]; ok {
			continue
		}
		if err := p.source.Disallow(t.cgroupID); err != nil {
			p.log.Error(err, "disallow pod cgroup", "cgroupID", t.cgroupID)
			continue
		}
		delete(p.trees, uid)
	}
	for id := range eddyCgroups {
		if !p.silenced[id] && want[id] == nil {
			if err := p.source.Disallow(id); err != nil {
				p.log.Error(err, "disallow eddy's own container", "cgroupID", id)
				continue
			}
			p.silenced[id] = true
		}
	}
	for id := range p.silenced {
		if !eddyCgroups[id] {
			delete(p.silenced, id)
		}
	}
	for id, pc := range want {
		if _, ok := p.allowed[id]; !ok {
			if err := p.source.Allow(id); err != nil {
				p.log.Error(err, "allow cgroup", "cgroupID", id, "pod", pc.Pod.Namespace+"/"+pc.Pod.Name, "container", pc.Container)
				continue
			}
			p.log.V(1).Info("observing container", "pod", pc.Pod.Namespace+"/"+pc.Pod.Name, "container", pc.Container, "cgroupID", id)
		}
		p.allowed[id] = pc
		delete(p.retired, id)
	}
	for id, pc := range p.allowed {
		if _, ok := want[id]; ok {
			continue
		}
		if err := p.source.Disallow(id); err != nil {
			p.log.Error(err, "disallow cgroup", "cgroupID", id)
			continue
		}
		p.log.V(1).Info("no longer observing container", "pod", pc.Pod.Namespace+"/"+pc.Pod.Name, "container", pc.Container, "cgroupID", id)
		delete(p.allowed, id)
		if pc.Container == "" && eddys[pc.ContainerID] {
			continue // eddy's own: its reads are not the workload's
		}
		p.retired[id] = retiredContainer{pc: pc, since: now}
	}
	for id, r := range p.retired {
		if now.Sub(r.since) > p.retain {
			delete(p.retired, id)
		}
	}
}

// learnerTimeout bounds the owner lookups behind one pod's decision.
const learnerTimeout = 2 * time.Second

// decide returns, for every opted-in pod of the node, whether it is
// observed, deciding for pods not seen before (and forgetting pods gone).
func (p *PodIndex) decide(pods []*corev1.Pod, enabled map[string]bool) map[types.UID]bool {
	p.mu.RLock()
	prev, first := p.decided, !p.synced
	p.mu.RUnlock()
	out := make(map[types.UID]bool, len(prev))
	for _, pod := range pods {
		if pod.Spec.NodeName != p.node || !enabled[pod.Namespace] || !PodOptedIn(pod) {
			continue
		}
		d, ok := prev[pod.UID]
		switch {
		case ok:
		case p.learner == nil || first:
			d = true
		default:
			ctx, cancel := context.WithTimeout(context.Background(), learnerTimeout)
			d = p.learner.Learning(ctx, pod)
			cancel()
		}
		out[pod.UID] = d
	}
	p.mu.Lock()
	for uid := range out {
		// A Sync running at the same time decided first: keep its decision.
		if d, ok := p.decided[uid]; ok {
			out[uid] = d
		}
	}
	p.decided, p.synced = out, true
	p.mu.Unlock()
	return out
}

// Resting is how many opted-in pods of the node are not observed because
// their workload rests.
func (p *PodIndex) Resting() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.resting
}

// Lookup returns the container whose cgroup has the given id, including
// containers that left the allow-list less than Retain ago.
func (p *PodIndex) Lookup(cgroupID uint64) (*PodContainer, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if pc, ok := p.allowed[cgroupID]; ok {
		return pc, true
	}
	if r, ok := p.retired[cgroupID]; ok {
		return r.pc, true
	}
	return nil, false
}

// Observed implements Attributor: the cgroups on the allow-list, and the
// opted-in containers that had no cgroup on this node at the last sync
// (starting, or already gone).
func (p *PodIndex) Observed() (observed, pending int) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.allowed), p.pending
}

// ObservedPods implements Attributor: the pods with their own cgroup or a
// container's on the allow-list.
func (p *PodIndex) ObservedPods() []*corev1.Pod {
	p.mu.RLock()
	defer p.mu.RUnlock()
	seen := map[types.UID]bool{}
	var out []*corev1.Pod
	add := func(pod *corev1.Pod) {
		if !seen[pod.UID] {
			seen[pod.UID] = true
			out = append(out, pod)
		}
	}
	for _, t := range p.trees {
		add(t.pod)
	}
	for _, pc := range p.allowed {
		add(pc.Pod)
	}
	return out
}

// NamespaceOptedIn reports whether the namespace asks for autotuning.
func NamespaceOptedIn(ns *corev1.Namespace) bool {
	return ns.Labels[eddyv1alpha1.AutotuneLabel] == eddyv1alpha1.AutotuneEnabled
}

// PodOptedIn reports whether a pod in an opted-in namespace is observed: all
// are, except those labelled eddy.io/autotune=disabled.
func PodOptedIn(pod *corev1.Pod) bool {
	return pod.Labels[eddyv1alpha1.AutotuneLabel] != eddyv1alpha1.AutotuneDisabled
}

func injectedByEddy(pod *corev1.Pod, container string) bool {
	if _, ok := pod.Annotations[eddyv1alpha1.InjectedAnnotation]; !ok {
		return false
	}
	return container == eddyv1alpha1.PrefetchContainerName || container == eddyv1alpha1.SDKInitContainerName
}

// ContainerRef names a container of a pod and its runtime id.
type ContainerRef struct{ Name, ID string }

// ContainerIDs returns the runtime ids of a pod's containers (init, regular
// and ephemeral) that have not terminated, without the "<runtime>://"
// prefix, leaving out the containers eddy's webhook injected (their reads
// are eddy's, not the workload's). A finished pod has none: its cgroups are
// gone.
func ContainerIDs(pod *corev1.Pod) []ContainerRef {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	var out []ContainerRef
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, st := range list {
			if st.ContainerID == "" || st.State.Terminated != nil || injectedByEddy(pod, st.Name) {
				continue
			}
			if _, id, err := cgroups.SplitContainerID(st.ContainerID); err == nil {
				out = append(out, ContainerRef{Name: st.Name, ID: id})
			}
		}
	}
	return out
}

// podStarting reports whether some of the pod's containers have not been
// named in its status yet (a pod the kubelet is still starting).
func podStarting(pod *corev1.Pod) bool {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || pod.DeletionTimestamp != nil {
		return false
	}
	return len(statusContainerIDs(pod)) < len(pod.Spec.InitContainers)+len(pod.Spec.Containers)
}

// statuses are the pod's init and regular container statuses.
func statuses(pod *corev1.Pod) []corev1.ContainerStatus {
	return append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
}

// statusContainerIDs are the runtime ids of every container the pod's
// status names, eddy's own included.
func statusContainerIDs(pod *corev1.Pod) map[string]bool {
	ids := map[string]bool{}
	for _, st := range statuses(pod) {
		if _, id, err := cgroups.SplitContainerID(st.ContainerID); err == nil {
			ids[id] = true
		}
	}
	return ids
}

// eddysNamed reports whether every container eddy's webhook injected into
// the pod has been named, with its runtime id, in the pod's status.
func eddysNamed(pod *corev1.Pod) bool {
	named := map[string]bool{}
	for _, st := range statuses(pod) {
		if st.ContainerID != "" {
			named[st.Name] = true
		}
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if injectedByEddy(pod, c.Name) && !named[c.Name] {
				return false
			}
		}
	}
	return true
}
