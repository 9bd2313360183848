"""SDK behaviour with real PyTorch: the hinted order is the order the
program gets, and the program gets the order it would get without the SDK.
Skipped (with the reason) when torch cannot be imported."""

import os
import unittest

import eddy_sdk
from hintserver import HintServer

eddy_sdk.activate()  # before torch is imported: exercises the import hook

try:
    import torch
    from torch.utils.data import DataLoader, Subset
    TORCH_ERROR = None
except Exception as e:  # ImportError, or a broken install
    TORCH_ERROR = "torch is not importable by %s: %r" % (os.sys.executable, e)


class IndexFiles:
    """A map-style dataset that returns its index and exposes its files."""

    def __init__(self, n):
        self.files = ["/data/f%03d.bin" % i for i in range(n)]

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return i


class Custom(IndexFiles):
    def __init__(self, n):
        super().__init__(n)
        self.names = self.files
        del self.files

    def __len__(self):
        return len(self.names)


@unittest.skipIf(TORCH_ERROR, TORCH_ERROR or "")
class DataLoaderTest(unittest.TestCase):
    def setUp(self):
        self.srv = HintServer()
        self.addCleanup(self.srv.close)

    def epochs(self, make_loader, n_epochs, seed, with_sdk):
        """Iterate n_epochs from a fresh seed; return the indices per epoch."""
        os.environ["EDDY_PREFETCH_SOCKET"] = self.srv.path if with_sdk else "/nonexistent/eddy.sock"
        self.addCleanup(os.environ.pop, "EDDY_PREFETCH_SOCKET", None)
        torch.manual_seed(seed)
        loader = make_loader()
        out = []
        for _ in range(n_epochs):
            got = []
            for batch in loader:
                got.extend(int(i) for i in batch)
            out.append(got)
        return loader, out

    def check(self, make_loader, files_of, n_epochs=3, seed=1234):
        _, without = self.epochs(make_loader, n_epochs, seed, with_sdk=False)
        base = len(self.srv.hints)
        _, with_sdk = self.epochs(make_loader, n_epochs, seed, with_sdk=True)
        self.assertEqual(with_sdk, without, "the SDK must not change the order the program gets")
        hints = self.srv.wait(base + n_epochs)[base:]
        self.assertEqual(len(hints), n_epochs)
        for e, (h, got) in enumerate(zip(hints, with_sdk)):
            self.assertEqual(h["files"], [files_of(i) for i in got], "epoch %d: hint differs from what was read" % e)
        epochs = [h["epoch"] for h in hints]
        self.assertEqual(epochs, sorted(epochs))
        self.assertEqual(len(set(epochs)), n_epochs)
        self.assertNotEqual(with_sdk[0], with_sdk[1], "shuffled epochs should differ")

    def test_patched(self):
        self.assertTrue(getattr(DataLoader.__iter__, "_eddy_wrapped", False))

    def test_shuffle_global_generator(self):
        ds = IndexFiles(40)
        self.check(lambda: DataLoader(ds, batch_size=4, shuffle=True), lambda i: ds.files[i])

    def test_shuffle_own_generator(self):
        ds = IndexFiles(40)
        self.check(lambda: DataLoader(ds, batch_size=3, shuffle=True,
                                      generator=torch.Generator().manual_seed(7)), lambda i: ds.files[i])

    def test_random_sampler_with_generator_and_workers(self):
        ds = IndexFiles(24)

        def make():
            g = torch.Generator().manual_seed(99)
            return DataLoader(ds, batch_size=2, sampler=torch.utils.data.RandomSampler(ds, generator=g),
                              num_workers=2)
        self.check(make, lambda i: ds.files[i], n_epochs=2)

    def test_persistent_workers(self):
        ds = IndexFiles(24)
        self.check(lambda: DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, persistent_workers=True),
                   lambda i: ds.files[i], n_epochs=3)

    def test_subset_and_registered_paths(self):
        ds = eddy_sdk.register_paths(Custom(30), lambda i: "/other/%d" % i)
        sub = Subset(ds, list(range(10, 30)))
        self.check(lambda: DataLoader(sub, batch_size=5, shuffle=True), lambda i: "/other/%d" % i)

    def test_unknown_paths_send_nothing_and_change_nothing(self):
        ds = Custom(20)
        make = lambda: DataLoader(ds, batch_size=4, shuffle=True)
        _, without = self.epochs(make, 2, 5, with_sdk=False)
        _, with_sdk = self.epochs(make, 2, 5, with_sdk=True)
        self.assertEqual(with_sdk, without)
        self.assertEqual(self.srv.wait(1, timeout=0.5), [])

    def test_custom_sampler_not_simulated(self):
        class CountingSampler(torch.utils.data.Sampler):
            def __init__(self, n):
                self.n, self.calls = n, 0

            def __iter__(self):
                self.calls += 1
                return iter(range(self.n))

            def __len__(self):
                return self.n

        ds = IndexFiles(8)
        s = CountingSampler(8)
        for _ in DataLoader(ds, sampler=s, batch_size=2):
            pass
        self.assertEqual(s.calls, 1, "a custom sampler's __iter__ must run only once per epoch")


if __name__ == "__main__":
    unittest.main()
