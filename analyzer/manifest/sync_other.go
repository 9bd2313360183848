//go:build !linux

package manifest

import "os"

// syncFiles makes the data of files durable, one fsync each (no syncfs(2)
// here).
func syncFiles(_ string, files []string) error {
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
