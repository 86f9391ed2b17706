"""Training of torch methods: datasets, augmentations, encoders, Lightning stages.

Importing this package imports nothing else: :mod:`.specs` (read by the Snakefile through the
catalog) needs neither torch nor Lightning.

Modules
-------
:mod:`.specs`
    The reference methods (encoder + MLP head) and :data:`~.specs.COMMON_PARAMS`.
:mod:`.data`
    :class:`~.data.BrainDataset`, loaders and windows.
:mod:`.augment`
    Graph and time-series augmentations.
:mod:`.encoders`
    GCN, GAT, graph and temporal transformers, :class:`~.encoders.BrainClassifier`.
:mod:`.module`
    :class:`~.module.StageModule`, the base of every stage, and the generic
    :class:`~.module.LitClassifier`.
:mod:`.plugins`
    The stage-plugin interface (:class:`~.plugins.StagePlugin`, :class:`~.plugins.StageContext`,
    :func:`~.plugins.plugin_for`) and the linear probe of self-supervised stages.
:mod:`.weights`
    A stage's ``model.bin``: :func:`~.weights.read_model`, :func:`~.weights.load_previous`.
:mod:`.runner`
    :func:`~.runner.run_torch_stage`: one stage on one fold, resumable.
:mod:`.trained`
    :class:`~.trained.TrainedStage`: a trained stage rebuilt from its ``model.bin``.
"""
