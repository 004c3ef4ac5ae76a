"""Run a function right after a module is first imported, without importing it ourselves.

``import mmmamba_cli`` must stay fast, and importing transformers costs seconds; yet the Auto
classes should know "mmmamba" whichever of the two a user imports first. A finder at the front
of ``sys.meta_path`` lets the normal finders locate the module and wraps its loader's
``exec_module`` so that the callback runs once the module body has executed.
"""
from __future__ import annotations

import importlib.abc
import sys
import warnings
from collections.abc import Callable


class AfterImport(importlib.abc.MetaPathFinder):
    def __init__(self):
        self.callbacks: dict[str, list[Callable[[], None]]] = {}

    def add(self, module: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` now if ``module`` is already imported, else right after its import."""
        if module in sys.modules:
            _run(callback)
        else:
            self.callbacks.setdefault(module, []).append(callback)

    def find_spec(self, name, path=None, target=None):
        if name not in self.callbacks:
            return None
        callbacks = self.callbacks.pop(name)
        spec = None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_call(module):
            exec_module(module)
            for callback in callbacks:
                _run(callback)

        spec.loader.exec_module = exec_then_call  # this loader instance belongs to this spec only
        return spec


def _run(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception as e:  # noqa: BLE001 - never break the user's import of transformers
        warnings.warn(f"mmmamba: could not register with transformers ({type(e).__name__}: {e})", stacklevel=2)


HOOK = AfterImport()


def install() -> AfterImport:
    if HOOK not in sys.meta_path:
        sys.meta_path.insert(0, HOOK)
    return HOOK
