"""SDK behaviour without torch: path mapping, the hint client, activation."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import eddy_sdk
from eddy_sdk import _core
from hintserver import HintServer


class Files:
    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)


class Samples:
    def __init__(self, samples):
        self.samples = samples


class Subset:
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices


class Concat:
    def __init__(self, datasets, sizes):
        self.datasets, self.cumulative_sizes = datasets, sizes


class Opaque:
    pass


class PathMappingTest(unittest.TestCase):
    def test_known_shapes(self):
        self.assertEqual(_core._path_mapper(Files(["a", "b"]))(1), ["b"])
        self.assertEqual(_core._path_mapper(Samples([("x.jpg", 0), ("y.jpg", 1)]))(0), ["x.jpg"])
        self.assertEqual(_core._path_mapper(Subset(Files(["a", "b", "c"]), [2, 0]))(0), ["c"])
        concat = Concat([Files(["a", "b"]), Files(["c"])], [2, 3])
        self.assertEqual([_core._path_mapper(concat)(i) for i in range(3)], [["a"], ["b"], ["c"]])

    def test_unknown_dataset_is_left_alone(self):
        self.assertIsNone(_core._path_mapper(Opaque()))

    def test_register_paths(self):
        ds = Opaque()
        self.assertIs(eddy_sdk.register_paths(ds, lambda i: "/d/%d.bin" % i), ds)
        self.assertEqual(_core._path_mapper(ds)(3), ["/d/3.bin"])
        many = eddy_sdk.register_paths(Opaque(), lambda i: ["/a/%d" % i, "/b/%d" % i])
        self.assertEqual(_core._path_mapper(many)(1), ["/a/1", "/b/1"])

    def test_paths_made_absolute(self):
        self.assertEqual(_core._absolute("rel/x"), os.path.join(os.getcwd(), "rel/x"))


class HintClientTest(unittest.TestCase):
    def test_sends_one_json_line(self):
        srv = HintServer()
        self.addCleanup(srv.close)
        self.assertTrue(eddy_sdk.send_hint(3, ["/d/a", "/d/b"], path=srv.path))
        self.assertEqual(srv.wait(1), [{"epoch": 3, "files": ["/d/a", "/d/b"]}])

    def test_no_prefetcher_is_quietly_false(self):
        self.assertFalse(eddy_sdk.send_hint(0, ["/x"], path="/nonexistent/eddy.sock"))
        with tempfile.NamedTemporaryFile() as not_a_socket:
            self.assertFalse(eddy_sdk.send_hint(0, ["/x"], path=not_a_socket.name))

    def test_socket_from_environment(self):
        old = os.environ.get("EDDY_PREFETCH_SOCKET")
        try:
            os.environ["EDDY_PREFETCH_SOCKET"] = "/tmp/custom.sock"
            self.assertEqual(eddy_sdk.socket_path(), "/tmp/custom.sock")
            del os.environ["EDDY_PREFETCH_SOCKET"]
            self.assertEqual(eddy_sdk.socket_path(), "/eddy/sdk/prefetch.sock")
        finally:
            if old is not None:
                os.environ["EDDY_PREFETCH_SOCKET"] = old

    def test_broken_loader_never_raises(self):
        srv = HintServer()
        self.addCleanup(srv.close)
        os.environ["EDDY_PREFETCH_SOCKET"] = srv.path
        self.addCleanup(os.environ.pop, "EDDY_PREFETCH_SOCKET")

        class Exploding:
            @property
            def dataset(self):
                raise RuntimeError("boom")

        self.assertIsNone(_core._on_iter(Exploding()))
        self.assertIsNone(_core._on_iter(object()))


SDK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(eddy_sdk.__file__)))


class ActivationTest(unittest.TestCase):
    def run_python(self, code, extra_path=(), env=None):
        e = dict(os.environ)
        e["PYTHONPATH"] = os.pathsep.join([SDK_DIR] + list(extra_path))
        e["PYTHONDONTWRITEBYTECODE"] = "1"
        e.update(env or {})
        return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=60)

    def test_sitecustomize_activates_without_importing_torch(self):
        out = self.run_python(
            "import sys; print(any(type(f).__name__ == '_Finder' for f in sys.meta_path), 'torch' in sys.modules)")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.split(), ["True", "False"])

    def test_disabled_by_environment(self):
        out = self.run_python("import sys; print(any(type(f).__name__ == '_Finder' for f in sys.meta_path))",
                              env={"EDDY_SDK_DISABLE": "1"})
        self.assertEqual(out.stdout.split(), ["False"], out.stderr)

    def test_image_sitecustomize_still_runs(self):
        other = tempfile.mkdtemp()
        marker = os.path.join(other, "ran")
        with open(os.path.join(other, "sitecustomize.py"), "w") as f:
            f.write("open(%r, 'w').write('yes')\n" % marker)
        out = self.run_python("print('ok')", extra_path=[other])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(os.path.exists(marker), "the shadowed sitecustomize must still run")

    def test_program_unaffected_without_torch(self):
        out = self.run_python("import json; print(json.dumps([1, 2]))")
        self.assertEqual((out.returncode, out.stdout.strip(), out.stderr), (0, "[1, 2]", ""))


if __name__ == "__main__":
    unittest.main()
