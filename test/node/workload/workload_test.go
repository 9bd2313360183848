package workload

import "testing"

// TestHotSetReadsTheRestOnce checks the HotSet pattern's shape: the hot
// tenth every epoch, every other file exactly once over the run, whatever
// the number of epochs.
func TestHotSetReadsTheRestOnce(t *testing.T) {
	dir := t.TempDir()
	const files, size = 40, 8 << 10
	if err := WriteSample(dir, files, size, 0); err != nil {
		t.Fatal(err)
	}
	for _, epochs := range []int{1, 3, 7, 40, 50} {
		r, err := Read(dir, HotSet, Options{Epochs: epochs, Seed: 7})
		if err != nil {
			t.Fatal(err)
		}
		hot := files / 10
		if want := int64(hot*epochs+files-hot) * size; r.Bytes != want {
			t.Errorf("%d epochs: read %d bytes, want %d (%d hot files each epoch, the other %d once)", epochs, r.Bytes, want, hot, files-hot)
		}
	}
}
