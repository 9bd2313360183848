"""A PyTorch training loop over a folder of small files: the job of eddy's
ShuffledEpochs benchmark, run in the torch image (Debian's python3 and
python3-torch).

A Dataset lists the folder's regular files (sorted by path, kept as
``dataset.files``: eddy's SDK maps DataLoader indices to paths through it);
each sample is one file read whole. A DataLoader shuffles them with a seeded
generator, so every run reads the same orders, a new one each epoch, and
each batch is followed by a fixed sleep standing in for the GPU's step.

The last line on stdout is the JSON report ``eddy-workload read`` prints
(test/node/workload.Report): the benchmark reads the time of the data loop
from it, and the digest is the Go program's for the same files.
"""

import time

BEGAN = time.time()  # before the imports: the report's "began"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402


class FolderDataset(Dataset):
    """Every regular file under a folder, one sample each, read whole.

    A sample is the file's bytes, as a dataset of encoded images hands them
    to a decoder on the GPU: a worker pickles them through a pipe. Tensors
    would go through shared memory, one segment and file descriptor each,
    which on the benchmark's shared 2-core VM cost more than the data
    stall being measured (768 samples of 256 KiB from the page cache: about
    6 s with tensors, even stacked a batch at a time, against 1.2-1.7 s with
    bytes).
    """

    def __init__(self, root):
        self.root = root
        self.names = sorted(_regular_files(root))
        self.files = [os.path.join(root, n) for n in self.names]

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        with open(self.files[index], "rb") as f:
            return index, f.read()


def _regular_files(root, rel=""):
    """Paths relative to root of the regular files under it (symlinks not
    followed), as the Go workload lists them."""
    out = []
    with os.scandir(os.path.join(root, rel)) as it:
        for e in it:
            name = os.path.join(rel, e.name) if rel else e.name
            if e.is_dir(follow_symlinks=False):
                out.extend(_regular_files(root, name))
            elif e.is_file(follow_symlinks=False):
                out.append(name)
    return out


def collate(batch):
    """(indices, samples) of a batch."""
    return [i for i, _ in batch], [data for _, data in batch]


def digest(hashes):
    """The Go workload's digest: SHA-256 over "name sha256\\n" lines, sorted."""
    lines = "".join("%s %s\n" % (n, hashes[n]) for n in sorted(hashes))
    return hashlib.sha256(lines.encode()).hexdigest()


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="/data", help="dataset folder")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=7, help="seed of the DataLoader's generator")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--compute", type=float, default=0.040,
                   help="seconds slept after each batch, standing in for the GPU")
    p.add_argument("--log-order", action="store_true",
                   help="write each epoch's file order to stderr as a JSON line")
    args = p.parse_args(argv)

    dataset = FolderDataset(args.dir)
    if len(dataset) == 0:
        raise RuntimeError("no files under %s: is the dataset volume mounted and populated?" % args.dir)
    generator = torch.Generator()
    generator.manual_seed(args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, generator=generator,
                        num_workers=args.workers, persistent_workers=args.workers > 0, collate_fn=collate)

    hashes = {}
    # reads counts whole-file reads; the Go workload counts its 1 MiB read
    # calls, the same number for files up to 1 MiB.
    nbytes = reads = 0
    start = time.monotonic()
    for epoch in range(args.epochs):
        order = []
        for indices, samples in loader:
            for i, data in zip(indices, samples):
                hashes[dataset.names[i]] = hashlib.sha256(data).hexdigest()
                nbytes += len(data)
                reads += 1
                order.append(dataset.names[i])
            time.sleep(args.compute)
        if args.log_order:
            print(json.dumps({"epoch": epoch, "files": order}), file=sys.stderr, flush=True)
    seconds = time.monotonic() - start
    report = {
        "pattern": "smallfiles", "dir": args.dir, "files": len(dataset), "bytes": nbytes,
        "reads": reads, "epochs": args.epochs, "seconds": seconds, "end": time.time(),
        "digest": digest(hashes), "began": BEGAN,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Exception as e:  # the pod's termination message says why
        msg = "train.py: %s: %s" % (type(e).__name__, e)
        print(msg, file=sys.stderr)
        try:
            with open("/dev/termination-log", "w") as f:
                f.write(msg)
        except OSError:
            pass
        sys.exit(1)
