"""Pre-training once on an unlabelled corpus, and the encoders it leaves on disk.

``methods.<m>.pretrain_on`` names a corpus: a brainfuse cache (``results/cache/<modality>.parquet``
of another run; the file name gives the modality) or a folder holding such caches. The method's
``pretrain`` stage then runs once on every sample of the corpus (no labels read, no folds, no
validation split: the whole schedule is trained and its last epoch kept) and writes
``results/pretrained/<method>/encoder.bin`` (a stage ``model.bin``, :data:`MODEL_FORMAT`) and
``manifest.json`` (:data:`FORMAT`: the corpus files and their SHA-256, the subjects it saw, the
parameters' hash, the seed, the number of samples). Every fold's next stage starts from that
encoder instead of a per-fold pre-training; ``methods.<m>.init`` names such an ``encoder.bin``
directly (of another run or dataset), its ``manifest.json`` beside it.

The module is torch-free at import (the Snakefile and the planning check read it); training
imports the torch runner inside :func:`pretrain_on_corpus`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from brainfuse.core import atomic
from brainfuse.core.errors import ConfigError
from brainfuse.core.provenance import config_hash
from brainfuse.methods.catalog import MODALITY_PREFERENCE
from brainfuse.methods.spec import MethodSpec

__all__ = [
    "ENCODER",
    "FORMAT",
    "MANIFEST",
    "CorpusJob",
    "corpus_caches",
    "corpus_subjects",
    "list_encoders",
    "manifest_of",
    "method_corpus",
    "overlapping_subjects",
    "pretrain_on_corpus",
    "pretrained_subjects",
    "pretraining_summary",
    "read_manifest",
]

#: Format tag of a run-once pre-training's ``manifest.json``.
FORMAT = "brainfuse-pretrained/1"
#: File names under ``results/pretrained/<method>/``.
ENCODER = "encoder.bin"
MANIFEST = "manifest.json"
#: The stage a corpus replaces.
STAGE = "pretrain"
#: A method's frozen-encoder evaluation (the linear probe its pre-training stage scores on each
#: fold) is a row of the results of its own: the method's name with this suffix.
FROZEN_SUFFIX = " (frozen)"
#: ``pretrain_on: demo_corpus``: the demo's unlabelled corpus (:mod:`brainfuse.demo.corpus`),
#: made by the workflow before the pre-training that reads it.
DEMO_CORPUS = "demo_corpus"


def corpus_caches(source: str | os.PathLike, modalities: Iterable[str]) -> dict[str, str]:
    """The caches of a corpus that a method reads: modality -> path.

    Parameters
    ----------
    source : str or path
        A cache file ``<modality>.parquet`` or a folder holding ``<modality>.parquet`` files.
    modalities : iterable of str
        The method's modalities (its spec's ``modalities``).

    Returns
    -------
    dict
        The modalities of ``modalities`` the corpus has, in their order (may be empty).

    Raises
    ------
    ConfigError
        ``source`` does not exist.
    """
    path = Path(source)
    if path.is_dir():
        found = {m: path / f"{m}.parquet" for m in modalities}
        return {m: str(p) for m, p in found.items() if p.is_file()}
    if path.is_file():
        return {path.stem: str(path)} if path.stem in set(modalities) else {}
    raise ConfigError(f"pretrain_on: {source} is neither a cache file nor a folder")


def method_corpus(
    spec: MethodSpec, source: str | os.PathLike, demo_corpus: str | None = None
) -> dict[str, str]:
    """The corpus caches of ``methods.<spec.name>.pretrain_on``: modality -> path.

    ``source`` :data:`DEMO_CORPUS` is the demo's corpus, the fMRI cache ``demo_corpus`` (the
    workflow's path for it, made by a rule, so it need not exist yet; None outside the demo).

    Raises
    ------
    ConfigError
        ``source`` is missing or lacks a modality the method needs (naming the config key).
    """
    key = f"methods.{spec.name}.pretrain_on"
    if str(source) == DEMO_CORPUS:
        if demo_corpus is None:
            raise ConfigError(f"{key}: {DEMO_CORPUS} is the demo's corpus (input.demo is false)")
        if "fmri" not in spec.modalities:
            raise ConfigError(f"{key}: {DEMO_CORPUS} holds fMRI; {spec.name} does not read it")
        return {"fmri": demo_corpus}
    try:
        caches = corpus_caches(source, spec.modalities or MODALITY_PREFERENCE)
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None
    if not spec.modalities:
        caches = dict(list(caches.items())[:1])
    missing = [m for m in spec.required if m not in caches]
    if not caches or missing:
        wanted = missing or list(spec.modalities or MODALITY_PREFERENCE)
        raise ConfigError(
            f"{key}: {source} holds no {' or '.join(wanted)} cache "
            f"(<modality>.parquet: a file, or a folder of them)"
        )
    return caches


def corpus_subjects(caches: Mapping[str, str]) -> list[str]:
    """Sorted distinct subjects of the corpus caches (only their ``subject`` column is read)."""
    subjects: set[str] = set()
    for path in caches.values():
        column = pq.read_table(path, columns=["subject"]).column("subject").to_pylist()
        subjects |= {str(s) for s in column}
    return sorted(subjects)


def manifest_of(encoder: str | os.PathLike) -> Path:
    """The ``manifest.json`` beside an ``encoder.bin``."""
    return Path(encoder).with_name(MANIFEST)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """A pre-training ``manifest.json``, or the one beside an ``encoder.bin`` or in a folder."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    elif path.suffix != ".json":
        path = manifest_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pre-training manifest (expected beside encoder.bin)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} manifest")
    return manifest


def pretrained_subjects(manifest: Mapping[str, Any]) -> list[str]:
    """Every subject whose data the encoder of ``manifest`` was trained on."""
    return sorted({str(s) for s in manifest["subjects"]["unlabelled_pretraining"]})


def _bare(subject: str) -> str:
    return str(subject).removeprefix("sub-")


def overlapping_subjects(corpus: Iterable[str], study: Iterable[str]) -> list[str]:
    """Subjects of ``study`` that are also in ``corpus``, compared by label (with or without
    ``sub-``). Assumes both use one subject namespace: the same person under two labels is
    not found."""
    seen = {_bare(s) for s in corpus}
    return sorted({s for s in map(str, study) if _bare(s) in seen})


@dataclass(frozen=True)
class CorpusJob:
    """One run-once pre-training.

    Attributes
    ----------
    method : str
        A method of the catalog with a self-supervised ``pretrain`` stage.
    corpus : mapping of str to str
        Modality -> cache of the corpus (:func:`corpus_caches`).
    source : str
        The configured ``pretrain_on`` (recorded in the manifest).
    seed : int
        Seed of initialisation, shuffling, augmentation and dropout.
    encoder : str
        Where ``encoder.bin`` is written.
    manifest : str
        Where ``manifest.json`` is written.
    checkpoint_dir : str
        Resumable checkpoints and logs.
    params : mapping
        The config's ``methods.<m>.params``.
    devices : int
        Processes/GPUs (``> 1``: DDP).
    study_subjects : sequence of str
        The study's subjects: pre-training refuses a corpus holding any of them (the planning
        check does too, for corpora that exist when the run is planned).
    """

    method: str
    corpus: Mapping[str, str]
    source: str
    seed: int
    encoder: str
    manifest: str
    checkpoint_dir: str
    params: Mapping[str, Any]
    devices: int = 1
    study_subjects: Sequence[str] = ()


def pretrain_on_corpus(job: CorpusJob, catalog: Any = None) -> dict[str, Any]:
    """Run the method's ``pretrain`` stage once on every corpus sample; write the encoder and
    its manifest (atomically, the manifest last).

    The corpus stage trains with the torch runner's data, checkpoint and resume code; labels are
    never read (the stage is self-supervised), no validation split is held out and the last
    epoch is kept.

    Parameters
    ----------
    job : CorpusJob
        What to pre-train and where to write.
    catalog : Catalog, optional
        Where the method is looked up (default: the built-in catalog).

    Returns
    -------
    dict
        The manifest written.
    """
    import torch
    from lightning import seed_everything

    from brainfuse.methods.catalog import default_catalog
    from brainfuse.methods.request import StageOutputs, StageRequest
    from brainfuse.methods.torch import runner
    from brainfuse.methods.torch.plugins import plugin_for
    from brainfuse.methods.torch.weights import MODEL_FORMAT
    from brainfuse.provenance import file_record, subjects_in

    catalog = default_catalog() if catalog is None else catalog
    if shared := overlapping_subjects(corpus_subjects(job.corpus), job.study_subjects):
        raise ValueError(
            f"methods.{job.method}.pretrain_on: {len(shared)} subjects of this study are in the "
            f"corpus {job.source} (any may be a test subject): {', '.join(shared[:10])}"
        )
    spec = catalog[job.method]
    plugin = plugin_for(spec, STAGE)
    if plugin.supervised:
        raise ValueError(f"{job.method}: its {STAGE} stage is supervised; a corpus has no labels")
    hp = catalog.params(job.method, job.params, STAGE)
    runner.check_params(catalog, job.method, hp, supervised=False)
    request = StageRequest(
        method=job.method,
        stage=STAGE,
        fold=-1,
        cache_paths=dict(job.corpus),
        folds_path="",
        positive="",  # no label is read: every sample is y = 0
        seed=job.seed,
        outputs=StageOutputs(model=job.encoder, metrics=job.manifest, predictions=""),
        params=job.params,
        checkpoint_dir=job.checkpoint_dir,
        devices=job.devices,
    )
    ckpt_dir = Path(job.checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    with runner.process_settings(hp["num_threads"]):
        seed_everything(job.seed, workers=True, verbose=False)
        data = runner.prepare_data(request, spec, hp, roles=_corpus_roles(job.corpus))
        fingerprint = runner.stage_fingerprint(request, spec, hp)
        lit = runner.build_module(request, plugin, hp, data, fingerprint)
        augment = data.augment
        full = data.full.with_fields([*lit.input_keys, *(augment.requires if augment else ())])
        train_set = full.subset(data.roles["train"], train=True, transform=augment)
        val_set = full.subset(set(), train=False, transform=None)
        fit = runner.fit_stage(request, hp, lit, train_set, val_set, ckpt_dir, fingerprint)
        if fit.trainer.global_rank != 0:
            return {}
        saved = {
            "format": MODEL_FORMAT,
            "method": job.method,
            "stage": STAGE,
            "fold": -1,
            "encoder": hp["encoder"],
            "n_nodes": full.n_nodes,
            "params": hp,
            "supervised": False,
            "input_keys": list(lit.input_keys),
            "state_dict": lit.model.state_dict(),
        }
        with atomic.atomic_path(job.encoder) as tmp:
            torch.save(saved, tmp)
        trained = {k: v for k, v in hp.items() if k not in runner.OPERATIONAL}
        manifest = {
            "format": FORMAT,
            "method": job.method,
            "stage": STAGE,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "corpus": {
                "source": str(job.source),
                "caches": {m: file_record(p) for m, p in sorted(job.corpus.items())},
            },
            "encoder": file_record(job.encoder),
            "seed": int(job.seed),
            "config_hash": config_hash({"params": trained, "seed": int(job.seed)}),
            "n_samples": len(train_set),
            "n_subjects": len(subjects_in(train_set.table)),
            "epochs": int(fit.trainer.current_epoch),
            "steps": int(fit.trainer.global_step),
            "subjects": {"unlabelled_pretraining": subjects_in(lit.train_set.table)},
        }
        atomic.write_json(job.manifest, manifest)
        if not hp["keep_checkpoints"]:
            runner.remove_checkpoints(ckpt_dir)
    return manifest


def _corpus_roles(corpus: Mapping[str, str]) -> dict[str, set[str]]:
    """Every corpus subject trains; none validates or is tested."""
    return {"train": set(corpus_subjects(corpus)), "val": set(), "test": set()}


def pretraining_summary(stages: Sequence[str], manifest: str | None, init: str | None) -> str:
    """What a method's encoder was pre-trained on, in one phrase for the report ("" when the
    method has no pre-training stage).

    Parameters
    ----------
    stages : sequence of str
        The method's configured stages (``methods.<m>.stages``).
    manifest : str, optional
        The ``manifest.json`` of its run-once pre-training (``pretrain_on`` or ``init``).
    init : str, optional
        ``methods.<m>.init``: the encoder file it was given.
    """
    if manifest:
        read = read_manifest(manifest)
        corpus = (
            f"corpus {read['corpus']['source']} ({read['n_subjects']} subjects, "
            f"{read['n_samples']} samples, unlabelled), once for every fold"
        )
        return f"init file {init}: {corpus}" if init else corpus
    if STAGE in stages:
        return "each fold's training subjects (unlabelled, in every fold)"
    return ""


def list_encoders(root: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per ``manifest.json`` under ``root`` (searched recursively), sorted by path:
    ``path`` (the encoder), ``method``, ``corpus``, ``n_subjects``, ``n_samples``, ``created``.
    """
    rows = []
    for path in sorted(Path(root).rglob(MANIFEST)):
        try:
            manifest = read_manifest(path)
        except (ValueError, json.JSONDecodeError):
            continue  # another tool's manifest.json
        rows.append(
            {
                "path": str(path.with_name(ENCODER)),
                "method": manifest["method"],
                "corpus": manifest["corpus"]["source"],
                "n_subjects": manifest["n_subjects"],
                "n_samples": manifest["n_samples"],
                "created": manifest["created"],
            }
        )
    return rows
