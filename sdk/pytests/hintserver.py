"""A stand-in prefetcher for the SDK tests: a unix socket that collects the
hint lines it receives (the real one is tested from Go)."""

import json
import os
import socket
import tempfile
import threading


class HintServer:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="eddy-sdk-test-")
        self.path = os.path.join(self.dir, "prefetch.sock")
        self.hints = []
        self._cond = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        with conn, conn.makefile("rb") as f:
            for line in f:
                with self._cond:
                    self.hints.append(json.loads(line))
                    self._cond.notify_all()

    def wait(self, n, timeout=10.0):
        """Wait until n hints arrived; return them all."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.hints) >= n, timeout)
            return list(self.hints)

    def close(self):
        self._sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self.dir)
        except OSError:
            pass
