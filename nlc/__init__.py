"""nlc - the Nested Learning Compiler.

YAML spec of nested optimization levels -> validated level graph -> runnable PyTorch.
``import nlc`` does not import torch; the torch-backed parts load on first use.
"""
from .errors import Issue as Issue, NLCError as NLCError, SpecError as SpecError
from .spec import Spec as Spec, load_spec as load_spec, validate as validate

__version__ = "0.1.0"
