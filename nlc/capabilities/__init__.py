"""What the runtime builds: the one capability table that validation and lowering both read.

The spec language can say more than the runtime executes. Every combination a spec can
write is either built by a runtime mixer or refused here, with the reason and a fix; the
validator (:mod:`nlc.graph.checks`, on the pydantic spec) turns a refusal into an
issue at the offending field's YAML line, and the lowering (``plan_memory``, ``CMSMixer``,
``SelfModifyingMemory``, ...) asserts the same table on the IR: a refusal there means the
validator let something through, a bug (:func:`assert_capable`).

The table is over plain values (strings, numbers, :class:`MemoryFacts`), which the spec
side and the IR side each supply, so this package imports nothing of the pipeline. It has
two parts: the per-level rules (:mod:`.rules`: memory update rules, initial states, CMS
levels) and the HOPE coupling of several memories (:mod:`.hope`); every name is imported
from here (``from nlc.capabilities import ...``).

Decisions (issue 12): a memory updates every token (``period: 1``); the CMS flush policies
``drop`` / ``flush`` are refused (the model never ends a sequence: streaming carries the
state, so only ``carry`` is consistent); a memory reads another level's output only in
HOPE's self-modifying pattern (:func:`hope_refusals`), which also runs a memory generating
its own targets (``self_target``) from static sources; ``init: {copy: ...}`` is refused
(no mixer copies another level's initial state); ``reset`` is read only with a nested
initial state (``init: {from: X}``), where the model re-initialises the level whenever X
completes a chunk (``slower_chunk``, also what an omitted ``reset`` gets).
"""
from .hope import (
    HOPE_PATTERN, KnobFacts, MemoryFacts, SourceFacts, component_roles, coupled, hope_refusals,
    self_modifying,
)
from .rules import (
    CMS_AXES,
    MEMORY_AXES,
    TABLE,
    CMSCase,
    Refusal,
    RuleCase,
    assert_capable,
    chunk_frozen,
    cms_init_refusals,
    cms_refusals,
    frozen_mlp_refusals,
    guards,
    init_refusals,
    memory_combinations,
    memory_primitive,
    memory_refusals,
)

__all__ = [
    "CMS_AXES", "HOPE_PATTERN", "MEMORY_AXES", "TABLE", "CMSCase", "KnobFacts", "MemoryFacts", "Refusal",
    "RuleCase", "SourceFacts", "assert_capable", "chunk_frozen", "cms_init_refusals", "cms_refusals",
    "component_roles", "coupled", "frozen_mlp_refusals", "guards", "hope_refusals", "init_refusals",
    "memory_combinations", "memory_primitive", "memory_refusals", "self_modifying",
]
