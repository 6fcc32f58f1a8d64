"""The spec language: pydantic models, YAML loading with positions, overrides. Loading a
*valid* spec (the level graph's checks too) is :func:`nlc.load_spec` / :func:`nlc.validate`
(:mod:`nlc.graph.validate`).

Imports no torch, so ``nlc validate`` / ``show`` / ``graph`` / ``schema`` stay instant.
"""
from ..errors import Issue as Issue, SpecError as SpecError
from .load import (
    load_raw as load_raw,
    source_line as source_line,
    spec_to_data as spec_to_data,
    spec_to_yaml as spec_to_yaml,
)
from .model import SPEC_VERSION as SPEC_VERSION, Spec as Spec
