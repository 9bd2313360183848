"""Activates the eddy SDK when this folder is on PYTHONPATH.

Python imports ``sitecustomize`` at start-up; this one turns the SDK on and
then runs the ``sitecustomize`` it shadows (the image's own, if any), so
nothing the image relied on is lost. It never raises.
"""


def _eddy_activate():
    try:
        import eddy_sdk

        eddy_sdk.activate()
    except Exception:  # the SDK must never break the program it rides in
        pass


def _eddy_chain():
    """Run the next sitecustomize on sys.path, the one this file shadows."""
    try:
        import importlib.machinery
        import importlib.util
        import os
        import sys

        here = os.path.dirname(os.path.abspath(__file__))
        rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
        if spec is None or spec.loader is None or spec.origin == os.path.abspath(__file__):
            return
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception:
        pass


_eddy_activate()
_eddy_chain()
