"""What generated code imports: the model base class, the mixers and the IR node types.

``from nlc import runtime as rt`` is the only nlc import in an emitted module.
"""
from dataclasses import replace as replace  # a level written as another with a new name
from fractions import Fraction as Fraction

from ..graph.build import INFINITE as INFINITE  # f = infinity (attention), rt.INFINITE in generated code
from ..ir.nodes import (
    AttentionIR as AttentionIR,
    FeaturesIR as FeaturesIR,
    KnobIR as KnobIR,
    MemoryIR as MemoryIR,
    MLPIR as MLPIR,
    ObjectiveIR as ObjectiveIR,
    OptimizerIR as OptimizerIR,
    PersistentIR as PersistentIR,
    RuleIR as RuleIR,
    SourceIR as SourceIR,
)
from ..schedule import UpdateSchedule as UpdateSchedule
from .attention import AttentionMixer as AttentionMixer
from .cms import CMSMixer as CMSMixer
from .context import Context as Context
from .layers import Parallel as Parallel, Residual as Residual
from .memory import MemoryMixer as MemoryMixer
from .mlp import MLPMixer as MLPMixer
from .model import LayerError as LayerError, NLCModel as NLCModel
from .selfmod import SelfModifyingMemory as SelfModifyingMemory
