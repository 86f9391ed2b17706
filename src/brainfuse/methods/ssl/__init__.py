"""Self-supervised methods (issue 6): MCSP, BrainMass, BrainMAE and dFC masked reconstruction.

Each method is a sequence of stages run by :func:`brainfuse.methods.torch.runner.run_torch_stage`
through the stage-plugin interface (:mod:`brainfuse.methods.torch.plugins`): a self-supervised
``pretrain`` stage (evaluated with a linear probe of its frozen embeddings) followed by
supervised stages.

Modules
-------
:mod:`.specs`
    The methods' catalog entries (stages, default parameters, plugin modules) and
    :data:`~.specs.PAPER_PARAMS` (torch-free; importing this package imports nothing else).
:mod:`.losses`
    InfoNCE, MCSP cross-domain / cross-modal losses, KL, BYOL and EMA, masked MSE,
    distillation.
:mod:`.common`
    Batch-level views (pseudo-FC, graph / series / spectrum perturbations), MLP, the
    :class:`~.common.SSLStage` base and frozen-embedding few-shot evaluation.
:mod:`.mcsp`, :mod:`.brainmass`, :mod:`.brainmae`, :mod:`.dfc_generative`
    The methods' networks and stage modules; each exposes ``stage_plugins(spec)``.
"""
