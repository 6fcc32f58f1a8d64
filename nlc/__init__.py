"""nlc - the Nested Learning Compiler.

YAML spec of nested optimization levels -> validated level graph -> runnable PyTorch.
``import nlc`` does not import torch; the torch-backed parts load on first use.
"""
from .errors import Issue as Issue, NLCError as NLCError, SpecError as SpecError
from .spec import Spec as Spec
from .graph.validate import load_spec as load_spec, validate as validate

from .version import __version__ as __version__


def __getattr__(name: str):
    """torch-backed API, imported on first use so ``import nlc`` stays light."""
    if name == "compile":
        from .compiler import compile_spec  # lazy: keeps import nlc free of torch

        return compile_spec
    if name == "train":
        from .training import train  # lazy: keeps import nlc free of torch

        return train
    if name == "load":  # torch and the compiler load with it
        from .training.loading import load  # lazy: keeps import nlc free of torch

        return load
    raise AttributeError(f"module 'nlc' has no attribute {name!r}")
