"""Put this folder first on PYTHONPATH to run a Python in which torch, diffusers, transformers, accelerate and peft
cannot be imported (what a presenter install without the `models` extra is like): any import of them fails loudly.
(Setting sys.modules[name] = None instead breaks scipy, which probes sys.modules for torch.)"""

import importlib.abc
import importlib.machinery
import sys

BLOCKED = {"torch", "diffusers", "transformers", "accelerate", "peft"}


class _Refuse(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError(f"{module.__name__} is blocked: this process must run without the generation stack")


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, _Refuse()) if name.split(".")[0] in BLOCKED else None


sys.meta_path.insert(0, _Block())
