"""The SDK's machinery: path mapping, order computation, the hint client and
the import hook that follows torch's DataLoader. See the package docstring."""

import bisect
import importlib.abc
import itertools
import json
import os
import queue
import socket
import sys
import threading
import time
import weakref

DEFAULT_SOCKET = "/eddy/sdk/prefetch.sock"

_TARGET_MODULE = "torch.utils.data.dataloader"
_PATH_ATTRS = ("files", "paths", "file_paths", "filenames")
_SAMPLE_ATTRS = ("samples", "imgs")

_lock = threading.Lock()
_epoch = itertools.count()
_registered = weakref.WeakKeyDictionary()
_registered_by_id = {}
_activated = False


def _debug(msg, *args):
    if os.environ.get("EDDY_SDK_DEBUG") == "1":
        try:
            sys.stderr.write("eddy_sdk: " + (msg % args) + "\n")
        except Exception:
            pass


def socket_path():
    """The prefetcher's hint socket: $EDDY_PREFETCH_SOCKET or the default."""
    return os.environ.get("EDDY_PREFETCH_SOCKET") or DEFAULT_SOCKET


def register_paths(dataset, fn):
    """Tell the SDK how to map an index of ``dataset`` to the file it reads.

    ``fn(index)`` returns a path, a list of paths, or None. Use it when the
    dataset keeps its files somewhere the SDK does not look. Returns
    ``dataset`` so it can wrap a constructor call.
    """
    try:
        _registered[dataset] = fn
    except TypeError:  # not weak-referenceable
        _registered_by_id[id(dataset)] = (dataset, fn)
    return dataset


def _lookup_registered(dataset):
    try:
        fn = _registered.get(dataset)
    except TypeError:
        fn = None
    if fn is None:
        entry = _registered_by_id.get(id(dataset))
        if entry is not None and entry[0] is dataset:
            fn = entry[1]
    return fn


def _path_mapper(dataset, depth=0):
    """Return f(index) -> list of paths for dataset, or None if unknown."""
    if depth > 8:
        return None
    fn = _lookup_registered(dataset)
    if fn is not None:
        def registered(i):
            got = fn(i)
            if got is None:
                return []
            if isinstance(got, (str, bytes, os.PathLike)):
                return [got]
            return list(got)
        return registered
    for attr in _SAMPLE_ATTRS:
        samples = getattr(dataset, attr, None)
        if isinstance(samples, (list, tuple)) and samples and isinstance(samples[0], (list, tuple)):
            return lambda i, s=samples: [s[i][0]]
    for attr in _PATH_ATTRS:
        paths = getattr(dataset, attr, None)
        if isinstance(paths, (list, tuple)) and paths and isinstance(paths[0], (str, bytes, os.PathLike)):
            return lambda i, p=paths: [p[i]]
    inner, indices = getattr(dataset, "dataset", None), getattr(dataset, "indices", None)
    if inner is not None and indices is not None:  # torch.utils.data.Subset
        m = _path_mapper(inner, depth + 1)
        if m is not None:
            return lambda i: m(int(indices[i]))
    parts, sizes = getattr(dataset, "datasets", None), getattr(dataset, "cumulative_sizes", None)
    if parts is not None and sizes is not None:  # torch.utils.data.ConcatDataset
        mappers = [_path_mapper(d, depth + 1) for d in parts]
        if all(m is not None for m in mappers):
            def concat(i):
                k = bisect.bisect_right(sizes, i)
                return mappers[k](i - (sizes[k - 1] if k > 0 else 0))
            return concat
    return None


def _absolute(p):
    p = os.fspath(p)
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    return os.path.abspath(p)


def _flatten(indices):
    for item in indices:
        if isinstance(item, (list, tuple)):
            for i in item:
                yield int(i)
        elif hasattr(item, "tolist") and not isinstance(item, int):
            got = item.tolist()
            if isinstance(got, list):
                for i in got:
                    yield int(i)
            else:
                yield int(got)
        else:
            yield int(item)


class _RandomState:
    """Saves and restores every random state a sampler may draw from."""

    def __init__(self, torch, loader):
        self._saved = []
        seen = set()
        gens = [torch.default_generator, getattr(loader, "generator", None)]
        for s in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            gens.append(getattr(s, "generator", None))
            gens.append(getattr(getattr(s, "sampler", None), "generator", None))
        for g in gens:
            if g is not None and id(g) not in seen and hasattr(g, "get_state"):
                seen.add(id(g))
                self._saved.append((g.set_state, g.get_state()))
        import random
        self._saved.append((random.setstate, random.getstate()))
        np = sys.modules.get("numpy")
        if np is not None:
            try:
                self._saved.append((np.random.set_state, np.random.get_state()))
            except Exception:
                pass

    def restore(self):
        for setter, state in self._saved:
            setter(state)


def _pre_sampler_draws(torch, loader):
    """Repeat the draws DataLoader makes before its sampler runs, so the
    simulated sampler sees the random state the real one will: a new
    iterator draws its workers' base seed first; a persistent iterator that
    is only reset draws nothing."""
    if (getattr(loader, "persistent_workers", False) and getattr(loader, "num_workers", 0) > 0
            and getattr(loader, "_iterator", None) is not None):
        return
    torch.empty((), dtype=torch.int64).random_(generator=getattr(loader, "generator", None))


def _known_sampler(torch, sampler):
    """True when iterating sampler has no effect but on random state: only
    torch's own samplers qualify (a custom sampler may count epochs in its
    __iter__, and simulating it would change what the program gets)."""
    data = torch.utils.data
    known = [getattr(data, n, None) for n in (
        "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler")]
    dist = getattr(getattr(data, "distributed", None), "DistributedSampler", None)
    known.append(dist)
    batch = getattr(data, "BatchSampler", None)
    if batch is not None and type(sampler) is batch:
        sampler = getattr(sampler, "sampler", None)
    return any(k is not None and type(sampler) is k for k in known)


def epoch_paths(loader):
    """The files ``loader`` will read in its next epoch, in order.

    Returns None when the order or the paths cannot be known (iterable
    datasets, no path mapping). Every random state is restored, so the next
    ``iter(loader)`` yields exactly what it would have yielded.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    dataset = getattr(loader, "dataset", None)
    IterableDataset = getattr(getattr(torch.utils, "data", None), "IterableDataset", None)
    if IterableDataset is not None and isinstance(dataset, IterableDataset):
        _debug("iterable dataset: its order is not known in advance")
        return None
    mapper = _path_mapper(dataset)
    if mapper is None:
        _debug("no index -> path mapping for %s; use eddy_sdk.register_paths", type(dataset).__name__)
        return None
    sampler = getattr(loader, "_index_sampler", None)
    if sampler is None:
        return None
    if not _known_sampler(torch, sampler):
        _debug("sampler %s is not one of torch's; its order is not simulated", type(sampler).__name__)
        return None
    state = _RandomState(torch, loader)
    try:
        _pre_sampler_draws(torch, loader)
        order = list(_flatten(iter(sampler)))
    finally:
        state.restore()
    paths = []
    for i in order:
        for p in mapper(i):
            paths.append(_absolute(p))
    return paths


def _encode(epoch, files):
    return json.dumps({"epoch": int(epoch), "files": list(files)}).encode() + b"\n"


def _connect(path, timeout):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
    except Exception:
        s.close()
        raise
    return s


def send_hint(epoch, files, path=None, timeout=5.0):
    """Send one hint: ``{"epoch": epoch, "files": files}`` and a newline, on
    a connection of its own.

    Returns True when the message was handed to the socket, False (never an
    exception) when there is no prefetcher or the send failed.
    """
    path = path or socket_path()
    try:
        if not os.path.exists(path):
            _debug("no prefetcher socket at %s", path)
            return False
        s = _connect(path, timeout)
        try:
            s.sendall(_encode(epoch, files))
        finally:
            s.close()
        _debug("sent epoch %d: %d files to %s", epoch, len(files), path)
        return True
    except Exception as e:
        _debug("hint for epoch %d not sent: %r", epoch, e)
        return False


class _Sender:
    """One daemon thread sending hints off the training loop, over one kept
    connection per socket, so they arrive in epoch order."""

    def __init__(self):
        self._queue = queue.Queue()
        self._thread = None
        self._conns = {}

    def submit(self, epoch, files, path):
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="eddy-sdk-hints", daemon=True)
            self._thread.start()
        self._queue.put((epoch, files, path))

    def _run(self):
        while True:
            epoch, files, path = self._queue.get()
            try:
                self._send(epoch, files, path)
            finally:
                self._queue.task_done()

    def _send(self, epoch, files, path, timeout=5.0):
        msg = _encode(epoch, files)
        for attempt in (1, 2):  # a kept connection may have been closed by a restarted prefetcher
            conn = self._conns.pop(path, None)
            try:
                if conn is None:
                    if not os.path.exists(path):
                        _debug("no prefetcher socket at %s", path)
                        return
                    conn = _connect(path, timeout)
                conn.sendall(msg)
                self._conns[path] = conn
                _debug("sent epoch %d: %d files to %s", epoch, len(files), path)
                return
            except Exception as e:
                if conn is not None:
                    conn.close()
                if attempt == 2:
                    _debug("hint for epoch %d not sent: %r", epoch, e)

    def flush(self, timeout=10.0):
        """Wait (at most timeout seconds) until queued hints are sent."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)


_sender = _Sender()


def _on_iter(loader):
    """Compute and send the epoch's order; swallow every error."""
    try:
        path = socket_path()
        if os.environ.get("EDDY_SDK_DISABLE") == "1" or not os.path.exists(path):
            return None
        files = epoch_paths(loader)
        if not files:
            return None
        with _lock:
            epoch = next(_epoch)
            _sender.submit(epoch, files, path)
        return epoch
    except Exception as e:
        _debug("epoch order not computed: %r", e)
        return None


def _patch_dataloader(module):
    """Wrap DataLoader.__iter__ in module (torch.utils.data.dataloader)."""
    cls = getattr(module, "DataLoader", None)
    if cls is None or getattr(cls.__iter__, "_eddy_wrapped", False):
        return
    original = cls.__iter__

    def __iter__(self):
        _on_iter(self)
        return original(self)

    __iter__._eddy_wrapped = True
    __iter__.__wrapped__ = original
    __iter__.__doc__ = original.__doc__
    cls.__iter__ = __iter__
    _debug("following torch DataLoader")


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            _patch_dataloader(module)
        except Exception as e:
            _debug("DataLoader not followed: %r", e)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Patches DataLoader right after torch defines it."""

    def find_spec(self, name, path=None, target=None):
        if name != _TARGET_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PatchingLoader(spec.loader)
        return spec


def activate():
    """Follow DataLoaders from now on (idempotent; does nothing on error or
    with EDDY_SDK_DISABLE=1). torch is not imported by this call."""
    global _activated
    try:
        if _activated or os.environ.get("EDDY_SDK_DISABLE") == "1":
            return
        _activated = True
        module = sys.modules.get(_TARGET_MODULE)
        if module is not None:
            _patch_dataloader(module)
        else:
            sys.meta_path.insert(0, _Finder())
    except Exception as e:
        _debug("not activated: %r", e)
