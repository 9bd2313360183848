// Package durable holds the file-system steps the analyzer's persisted
// state (manifests, the local checkpoint log) shares.
package durable

import "os"

// SyncDir makes the renames (and creations, removals) in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
