"""The spec language: pydantic models, YAML loading with positions, overrides.

Imports no torch, so ``nlc validate`` / ``show`` / ``graph`` / ``schema`` stay instant.
"""
from ..errors import Issue as Issue, SpecError as SpecError
from .load import (
    load_raw as load_raw,
    load_spec as load_spec,
    source_line as source_line,
    spec_to_data as spec_to_data,
    spec_to_yaml as spec_to_yaml,
    validate as validate,
)
from .model import SPEC_VERSION as SPEC_VERSION, Spec as Spec
