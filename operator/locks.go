package operator

import "sync"

// datasetLocks serialises work on one dataset ("namespace/name") across the
// operator's controllers and workers, while different datasets proceed in
// parallel.
type datasetLocks struct {
	mu    sync.Mutex
	locks map[string]*datasetLock
}

type datasetLock struct {
	sync.Mutex
	users int
}

// lock takes the dataset's lock and returns its release.
func (d *datasetLocks) lock(key string) (unlock func()) {
	d.mu.Lock()
	if d.locks == nil {
		d.locks = map[string]*datasetLock{}
	}
	l := d.locks[key]
	if l == nil {
		l = &datasetLock{}
		d.locks[key] = l
	}
	l.users++
	d.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		d.mu.Lock()
		if l.users--; l.users == 0 {
			delete(d.locks, key)
		}
		d.mu.Unlock()
	}
}
