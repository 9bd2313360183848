"""eddy SDK: tells eddy's prefetch sidecar the exact upcoming read order.

When PyTorch is imported, ``torch.utils.data.DataLoader`` is followed: at
the start of each epoch (each ``iter(loader)``) the SDK computes the order in
which the loader's sampler will hand out indices -- without consuming any
random state the program would see, so the program gets exactly the order it
would get without the SDK -- maps the indices to file paths, and sends the
list to the prefetcher's unix socket. The prefetcher reads those files in
that order just ahead of the program.

Index -> path mapping, first match wins:

* a function registered with :func:`register_paths`;
* ``dataset.samples`` or ``dataset.imgs`` (``torchvision`` ``ImageFolder`` /
  ``DatasetFolder``): a list of ``(path, target)``;
* ``dataset.files``, ``dataset.paths``, ``dataset.file_paths`` or
  ``dataset.filenames``: a list of paths;
* ``torch.utils.data.Subset`` and ``ConcatDataset`` are followed through.

Environment:

* ``EDDY_PREFETCH_SOCKET``: the socket (default ``/eddy/sdk/prefetch.sock``).
* ``EDDY_SDK_DISABLE=1``: do nothing.
* ``EDDY_SDK_DEBUG=1``: explain on stderr what the SDK does and why not.

With no socket, no torch, or no way to map indices to paths, the SDK does
nothing. It never raises into the program and never changes what the
program reads or in which order.
"""

from eddy_sdk._core import (
    DEFAULT_SOCKET,
    activate,
    epoch_paths,
    register_paths,
    send_hint,
    socket_path,
)

__all__ = [
    "DEFAULT_SOCKET",
    "activate",
    "epoch_paths",
    "register_paths",
    "send_hint",
    "socket_path",
]
