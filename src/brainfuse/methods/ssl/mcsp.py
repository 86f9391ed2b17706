"""MCSP: multi-domain, cross-modal self-supervised pre-training of fMRI and EEG.

Three domains per modality, each with one **modality-agnostic** encoder shared by fMRI and EEG:

* ``spatial`` - :class:`~brainfuse.methods.torch.encoders.GraphTransformer` (mean readout) on
  Pearson-correlation graphs, correlation rows as node features: fMRI ``fc``; EEG ``aec`` (the
  correlation of the band-limited amplitude envelopes) of the chosen band;
* ``temporal`` - :class:`~brainfuse.methods.torch.encoders.TemporalTransformer` (time tokens) over
  the N x L window: fMRI ``timeseries``; EEG ``envelopes`` of the chosen band (2 Hz source
  envelopes, z-scored, cut to ``eeg_length = L`` samples; with ``eeg_amplitude`` plus each
  parcel's log amplitude relative to the subject's mean, :func:`relative_log_amplitude`);
* ``frequency`` - :class:`~brainfuse.methods.torch.encoders.TemporalTransformer` (ROI tokens) over
  the N x (L // 2 + 1) amplitude spectrum of that window.

Each (modality, domain) pair has its own **modality-aware projection head** ``h``; MCSP's
distribution is ``z = softmax(h)``.

Stages (``[pretrain, finetune, distill]``):

``pretrain`` (self-supervised)
    Per modality, the cross-domain loss ``a * L_in + (1 - a) * L_cross`` (in-domain InfoNCE
    between an augmented and the original view, cross-domain InfoNCE between the domains of the
    same sample; :func:`~.losses.cross_domain_loss`), averaged over the modalities; plus, per
    domain, the cross-modal loss ``a * L_con + (1 - a) * L_KL`` between the fMRI and EEG
    distributions of the same subject (:func:`~.losses.cross_modal_loss`) over the samples
    that have EEG, weighted by ``cross_modal_weight``. ``mcsp_fmri_only`` has no EEG and no
    cross-modal term.
``finetune`` (supervised)
    The fusion classifier: per domain, the mean of the available modalities' embeddings (fMRI,
    and EEG where the sample has it); the three domain embeddings concatenated; an MLP head;
    cross-entropy.
``distill`` (supervised)
    Cross-model distillation: the fine-tuned fusion model is the frozen teacher; one student per
    domain (that domain's encoder, initialised from the teacher's, plus its own head) learns
    from ``soft_weight * CE(teacher probabilities) + (1 - soft_weight) * CE(labels)``
    (:func:`~.losses.distillation_loss`). The stage predicts with the mean of the students'
    probabilities (``student_readout: mean``) or with one student (``student_readout: spatial``
    ...); every student's test AUC is added to ``metrics.json``.

A sample without EEG (``envelope_mask`` all False, or no EEG keys in the batch) is handled
with its fMRI alone in every stage. On a dataset without fMRI (``mcsp`` on EEG-only data) the EEG
branch trains alone: pre-training has the EEG cross-domain loss only, fine-tuning and
distillation read the EEG domain embeddings.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from brainfuse.methods.spec import MethodSpec
from brainfuse.methods.ssl.common import (
    MLP,
    SSLStage,
    augment_graph,
    augment_series,
    augment_spectrum,
)
from brainfuse.methods.ssl.losses import (
    cross_domain_loss,
    cross_modal_loss,
    distillation_loss,
    mcsp_distributions,
)
from brainfuse.methods.torch.data import BrainDataset, amplitude_spectrum
from brainfuse.methods.torch.encoders import GraphTransformer, TemporalTransformer
from brainfuse.methods.torch.plugins import StageContext, StagePlugin

__all__ = [
    "DOMAINS",
    "MCSPDistill",
    "MCSPFinetune",
    "MCSPNetwork",
    "MCSPPretrain",
    "domain_inputs",
    "eeg_band_index",
    "relative_log_amplitude",
]

DOMAINS = ("spatial", "temporal", "frequency")
#: How the distillation stage predicts: the students' mean, one student, or chosen on validation.
READOUTS = ("mean", *DOMAINS, "auto")

FMRI_KEYS = ("fc", "node_mask", "timeseries", "time_mask", "fft")
EEG_KEYS = ("envelopes", "envelope_mask", "aec", "band_power")

DomainInputs = dict[str, tuple[Tensor, Tensor]]


def eeg_band_index(bands: list[str] | None, band: str) -> int | None:
    """Index of ``band`` among the EEG cache's bands; None for ``"mean"`` (the mean over bands).

    Raises
    ------
    ValueError
        When the band is not in the cache.
    """
    if band == "mean":
        return None
    names = list(bands or [])
    if band not in names:
        raise ValueError(f"eeg_band={band!r} is not a band of the EEG cache {names}; or 'mean'")
    return names.index(band)


def has_eeg(batch: dict[str, Tensor]) -> Tensor:
    """(B,) bool: which samples carry EEG (a non-empty envelope window)."""
    if "envelope_mask" not in batch:
        return torch.zeros(len(batch["y"]), dtype=torch.bool, device=batch["y"].device)
    return batch["envelope_mask"].bool().any(-1)


def relative_log_amplitude(band_power: Tensor, node_mask: Tensor) -> Tensor:
    """(B, N) natural-log amplitude of each parcel relative to the sample's mean over valid
    parcels, from the cache's ``band_power`` (log10 mean power); 0 for masked parcels."""
    log_amplitude = 0.5 * math.log(10.0) * band_power.float()
    w = node_mask.to(log_amplitude.dtype)
    mean = (log_amplitude * w).sum(-1, keepdim=True) / w.sum(-1, keepdim=True).clamp(min=1.0)
    return (log_amplitude - mean) * w


def domain_inputs(
    batch: dict[str, Tensor], modality: str, band: int | None = None, amplitude: bool = False
) -> DomainInputs:
    """The three domain inputs of one modality: ``domain -> (x, mask)``.

    Parameters
    ----------
    batch : dict of str to Tensor
        A batch of :class:`~brainfuse.methods.torch.data.BrainDataset`.
    modality : {"fmri", "eeg"}
        Which one.
    band : int, optional
        EEG band index (None: the mean over bands).
    amplitude : bool
        EEG: add each parcel's :func:`relative_log_amplitude` to its z-scored envelope, so the
        amplitude topography that z-scoring removes reaches the temporal and frequency domains.

    Returns
    -------
    dict
        ``spatial``: (B, N, N) correlations and (B, N) node mask; ``temporal``: (B, N, L) window
        and (B, L) time mask; ``frequency``: (B, N, L // 2 + 1) amplitude spectrum and (B, N)
        node mask.
    """
    if modality == "fmri":
        return {
            "spatial": (batch["fc"], batch["node_mask"]),
            "temporal": (batch["timeseries"], batch["time_mask"]),
            "frequency": (batch["fft"], batch["node_mask"]),
        }
    env, aec = batch["envelopes"], batch["aec"]
    seq = env.mean(1) if band is None else env[:, band]
    graph = aec.mean(1) if band is None else aec[:, band]
    time_mask = batch["envelope_mask"].bool()
    node_mask = seq.abs().sum(-1) > 0
    if amplitude:
        power = batch["band_power"]
        power = power.mean(1) if band is None else power[:, band]
        offset = relative_log_amplitude(power, node_mask).to(seq.dtype)
        seq = seq + offset.unsqueeze(-1) * time_mask.unsqueeze(1).to(seq.dtype)
    pair = node_mask.unsqueeze(-1) & node_mask.unsqueeze(-2)
    eye = torch.eye(graph.shape[-1], dtype=torch.bool, device=graph.device)
    # Unit diagonal and zero rows for silent nodes, as the fMRI FC is served.
    graph = torch.where(eye, node_mask.unsqueeze(-1).to(graph.dtype), graph * pair)
    return {
        "spatial": (graph, node_mask),
        "temporal": (seq, time_mask),
        "frequency": (amplitude_spectrum(seq, time_mask.unsqueeze(1)), node_mask),
    }


def _domain_encoder(domain: str, n_nodes: int, length: int, hp: dict[str, Any]) -> nn.Module:
    size = {
        "d_model": int(hp["d_model"]),
        "n_heads": int(hp["n_heads"]),
        "n_layers": int(hp["n_layers"]),
        "dim_feedforward": int(hp["dim_feedforward"]),
        "dropout": float(hp["encoder_dropout"]),
        "residual_init": str(hp["residual_init"]),
    }
    if domain == "spatial":
        return GraphTransformer(n_nodes, readout="mean", **size)
    if domain == "temporal":
        return TemporalTransformer(n_nodes, tokens="time", max_len=max(length, 1), **size)
    return TemporalTransformer(
        n_nodes, tokens="roi", in_len=length // 2 + 1, input_key="fft", **size
    )


class MCSPNetwork(nn.Module):
    """Every tensor MCSP's stages use; each stage builds the parts it trains.

    Parameters
    ----------
    n_nodes : int
        N (fMRI and EEG share it).
    length : int
        Window length L of both modalities.
    modalities : tuple of str
        ``("fmri",)``, ``("eeg",)`` or ``("fmri", "eeg")``.
    hp : dict
        Resolved parameters (sizes).
    parts : set of str
        ``heads`` (projection heads, pre-training), ``classifier`` (fusion head), ``students``
        (one encoder + head per domain, distillation).

    Attributes
    ----------
    encoders : nn.ModuleDict
        Domain -> modality-agnostic encoder.
    heads : nn.ModuleDict
        ``<modality>_<domain>`` -> projection head (with ``heads``).
    classifier : MLP
        Fusion head over the concatenated domain embeddings (with ``classifier``).
    students : nn.ModuleDict
        Domain -> ``{"encoder", "head"}`` (with ``students``).
    """

    def __init__(
        self,
        n_nodes: int,
        length: int,
        modalities: tuple[str, ...],
        hp: dict[str, Any],
        parts: set[str],
    ) -> None:
        super().__init__()
        d = int(hp["d_model"])
        self.modalities = modalities
        self.encoders = nn.ModuleDict({k: _domain_encoder(k, n_nodes, length, hp) for k in DOMAINS})
        if "heads" in parts:
            self.heads = nn.ModuleDict(
                {
                    f"{m}_{k}": MLP(d, int(hp["proj_hidden"]), int(hp["proj_dim"]))
                    for m in modalities
                    for k in DOMAINS
                }
            )
        head_hidden, dropout = int(hp["head_hidden"]), float(hp["dropout"])
        if "classifier" in parts:
            self.classifier = MLP(len(DOMAINS) * d, head_hidden, 2, dropout=dropout)
        if "students" in parts:
            self.students = nn.ModuleDict(
                {
                    k: nn.ModuleDict(
                        {
                            "encoder": _domain_encoder(k, n_nodes, length, hp),
                            "head": MLP(d, head_hidden, 2, dropout=dropout),
                        }
                    )
                    for k in DOMAINS
                }
            )

    def domain_embeddings(
        self, inputs: DomainInputs, encoders: dict[str, nn.Module] | None = None
    ) -> dict[str, Tensor]:
        """(B, d_model) embedding of each domain of one modality."""
        encoders = encoders or dict(self.encoders)
        return {k: encoders[k](*inputs[k]) for k in DOMAINS if k in encoders}

    def fused(
        self,
        batch: dict[str, Tensor],
        band: int | None,
        encoders: dict[str, nn.Module] | None = None,
        amplitude: bool = False,
    ) -> dict[str, Tensor]:
        """Per domain, the mean of the fMRI and (where present) EEG embeddings (EEG inputs as
        :func:`domain_inputs` builds them with ``band`` and ``amplitude``); without fMRI, the
        EEG embeddings."""
        if "fmri" not in self.modalities:
            return self.domain_embeddings(domain_inputs(batch, "eeg", band, amplitude), encoders)
        out = self.domain_embeddings(domain_inputs(batch, "fmri"), encoders)
        if "eeg" not in self.modalities:
            return out
        present = has_eeg(batch)
        if not bool(present.any()):
            return out
        eeg = self.domain_embeddings(domain_inputs(batch, "eeg", band, amplitude), encoders)
        w = present.to(next(iter(out.values())).dtype).unsqueeze(-1)
        return {k: (out[k] + w * eeg[k]) / (1.0 + w) for k in out}


class _MCSPStage(SSLStage):
    """Shared set-up of the MCSP stages."""

    parts: frozenset[str] = frozenset()

    def __init__(self, ctx: StageContext) -> None:
        hp = ctx.hp
        modalities = tuple(ctx.dataset.modalities)
        n_nodes, length = ctx.n_nodes, int(hp["length"])
        self.band: int | None = None
        self.amplitude = bool(hp["eeg_amplitude"])
        if "eeg" in modalities:
            self.band = _check_eeg(ctx.dataset, hp, n_nodes)
        network = MCSPNetwork(n_nodes, length, modalities, hp, set(self.parts))
        super().__init__(ctx, network)
        self.modalities = modalities
        keys = {"fmri": FMRI_KEYS, "eeg": EEG_KEYS}
        self.input_keys = tuple(k for m in modalities for k in keys[m])

    @property
    def network(self) -> MCSPNetwork:
        """``self.model``, typed."""
        return self.model  # type: ignore[return-value]

    def fused_embedding(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, 3 * d_model): the fused domain embeddings, concatenated."""
        fused = self.network.fused(batch, self.band, amplitude=self.amplitude)
        return torch.cat([fused[k] for k in DOMAINS], dim=-1)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.fused_embedding(batch)


def _check_eeg(dataset: BrainDataset, hp: dict[str, Any], n_nodes: int) -> int | None:
    meta = dataset.metadata.get("eeg", {})
    band = eeg_band_index(meta.get("bands"), str(hp["eeg_band"]))
    n_eeg = int(dataset.with_fields(["aec"])[0]["aec"].shape[-1]) if len(dataset) else n_nodes
    if n_eeg != n_nodes:
        raise ValueError(
            f"MCSP shares its encoders between fMRI ({n_nodes} parcels) and EEG ({n_eeg} nodes): "
            "use source-level EEG on the fMRI atlas (eeg.level: source)"
        )
    if int(hp["eeg_length"]) != int(hp["length"]):
        raise ValueError(
            f"eeg_length={hp['eeg_length']} must equal length={hp['length']}: the frequency "
            "encoder is shared by both modalities"
        )
    return band


class MCSPPretrain(_MCSPStage):
    """MCSP's self-supervised stage: cross-domain (per modality) and cross-modal (per domain)
    contrastive learning."""

    parts = frozenset({"heads"})

    def _views(self, inputs: DomainInputs) -> DomainInputs:
        hp = self.hp
        graph, node_mask = inputs["spatial"]
        series, time_mask = inputs["temporal"]
        spectrum, spec_mask = inputs["frequency"]
        return {
            "spatial": (
                augment_graph(graph, node_mask, hp["view_edge_drop"], hp["view_edge_noise"]),
                node_mask,
            ),
            "temporal": (
                augment_series(series, time_mask, hp["view_time_noise"], hp["view_time_mask"]),
                time_mask,
            ),
            "frequency": (
                augment_spectrum(spectrum, hp["view_freq_mask"], hp["view_freq_noise"]),
                spec_mask,
            ),
        }

    def _distributions(self, modality: str, inputs: DomainInputs) -> dict[str, Tensor]:
        emb = self.network.domain_embeddings(inputs)
        return {k: mcsp_distributions(self.network.heads[f"{modality}_{k}"](emb[k])) for k in emb}

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tau, alpha = float(self.hp["tau"]), float(self.hp["alpha"])
        terms: dict[str, Tensor] = {}
        original: dict[str, dict[str, Tensor]] = {}
        cross_domain = []
        present = has_eeg(batch) if "eeg" in self.modalities else None
        for modality in self.modalities:
            if modality == "eeg" and "fmri" not in self.modalities:
                # EEG-only data: every sample has EEG, and the EEG term is the whole loss.
                inputs = domain_inputs(batch, "eeg", self.band, self.amplitude)
            elif modality == "eeg":
                assert present is not None
                if int(present.sum()) < 2:
                    continue
                rows = {k: v[present] for k, v in batch.items()}
                inputs = domain_inputs(rows, "eeg", self.band, self.amplitude)
            else:
                inputs = domain_inputs(batch, "fmri")
            original[modality] = self._distributions(modality, inputs)
            augmented = self._distributions(modality, self._views(inputs))
            loss, parts = cross_domain_loss(original[modality], augmented, tau, alpha)
            cross_domain.append(loss)
            terms[f"{modality}_in_domain"] = parts["in_domain"]
            terms[f"{modality}_cross_domain"] = parts["cross_domain"]
        total = torch.stack(cross_domain).mean()
        if "eeg" in self.modalities and "eeg" not in original:
            # Too few EEG samples in this batch: keep the EEG heads in the graph (zero
            # gradient), as DDP expects every trainable tensor to receive one.
            idle = [p.sum() for k, p in self.network.heads.named_parameters() if k[:4] == "eeg_"]
            total = total + 0.0 * torch.stack(idle).sum()
        if "eeg" in original and "fmri" in original:
            assert present is not None
            per_domain = []
            for k in DOMAINS:
                loss, parts = cross_modal_loss(
                    original["fmri"][k][present], original["eeg"][k], tau, alpha
                )
                per_domain.append(loss)
                terms[f"{k}_cross_modal_contrastive"] = parts["contrastive"]
                terms[f"{k}_cross_modal_kl"] = parts["kl"]
            cross_modal = torch.stack(per_domain).mean()
            terms["cross_modal"] = cross_modal.detach()
            total = total + float(self.hp["cross_modal_weight"]) * cross_modal
        terms["loss"] = total
        return terms


class MCSPFinetune(_MCSPStage):
    """MCSP's fine-tuning stage: the fusion classifier (the distillation teacher), trained with
    cross-entropy from the pre-trained encoders."""

    parts = frozenset({"classifier"})
    load_prefixes = ("encoders.",)

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        if self.hp["freeze_encoder"]:
            self.network.encoders.requires_grad_(False)

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self.network.classifier(self.fused_embedding(batch))

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"loss": self.cross_entropy(self.logits(batch), batch["y"])}


class MCSPDistill(_MCSPStage):
    """MCSP's cross-model distillation: single-domain students learn from the frozen fusion
    teacher (soft targets) and the labels (hard targets)."""

    parts = frozenset({"classifier", "students"})
    load_prefixes = ("encoders.", "classifier.")

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        readout = str(self.hp["student_readout"])
        if readout not in READOUTS:
            raise ValueError(f"student_readout={readout!r}: expected one of {READOUTS}")
        # "auto" trains and validates with the mean, then chooses (select_on_validation).
        self.auto = readout == "auto"
        self.readout = "mean" if self.auto else readout
        self.network.encoders.requires_grad_(False)
        self.network.classifier.requires_grad_(False)
        self._copy_teacher_encoders()

    def _copy_teacher_encoders(self) -> None:
        for k in DOMAINS:
            student = self.network.students[k]["encoder"]
            student.load_state_dict(copy.deepcopy(self.network.encoders[k].state_dict()))

    def load_previous(self, path: str) -> dict[str, list[str]]:
        """Load the teacher (encoders and fusion head), then start every student's encoder
        from the teacher's encoder of its domain."""
        report = super().load_previous(path)
        self._copy_teacher_encoders()
        return report

    def student_logits(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Domain -> (B, 2) logits of that domain's student."""
        students = {k: self.network.students[k]["encoder"] for k in DOMAINS}
        emb = self.network.fused(batch, self.band, students, self.amplitude)
        return {k: self.network.students[k]["head"](emb[k]) for k in DOMAINS}

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self._readout_logits(self.student_logits(batch), self.readout)

    @staticmethod
    def _readout_logits(per_student: dict[str, Tensor], readout: str) -> Tensor:
        if readout != "mean":
            return per_student[readout]
        probs = torch.stack([v.float().softmax(-1) for v in per_student.values()]).mean(0)
        return probs.clamp(min=1e-12).log()

    def readout_probabilities(
        self, dataset: BrainDataset, batch_size: int, device: torch.device
    ) -> dict[str, np.ndarray]:
        """Positive-class probabilities of every sample under each readout (``mean`` and each
        student) and under the ``teacher``."""
        from brainfuse.methods.torch.data import eval_loader

        names = ("mean", *DOMAINS, "teacher")
        probs: dict[str, list[Tensor]] = {k: [] for k in names}
        for batch in eval_loader(dataset, batch_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            per_student = self.student_logits(batch)
            logits = {k: self._readout_logits(per_student, k) for k in ("mean", *DOMAINS)}
            logits["teacher"] = self.network.classifier(self.fused_embedding(batch))
            for k, value in logits.items():
                probs[k].append(value.float().softmax(-1)[:, 1].cpu())
        return {k: torch.cat(v).numpy() if v else np.zeros(0) for k, v in probs.items()}

    def select_on_validation(
        self, val_set: BrainDataset, batch_size: int, device: torch.device
    ) -> dict[str, Any]:
        """With ``student_readout: auto``, predict with the readout (the students' mean or one
        student) of the highest validation AUC, balanced accuracy breaking ties, the mean
        winning remaining ties; without validation subjects, the mean."""
        if not self.auto:
            return {}
        if len(val_set) == 0:
            return {"student_readout_selected": self.readout, "student_readout_val_auc": {}}
        from brainfuse.methods.torch.module import binary_scores

        options = ("mean", *DOMAINS)
        probs = self.readout_probabilities(val_set, batch_size, device)
        y = val_set.labels.astype(int)
        scores = {}
        for k in options:
            s = binary_scores(y, probs[k])
            scores[k] = (s["auc"], s["balanced_accuracy"])
        best = max(options, key=lambda k: tuple(np.nan_to_num(scores[k], nan=-1.0)))
        self.readout = best
        return {
            "student_readout_selected": best,
            "student_readout_val_auc": {k: v[0] for k, v in scores.items()},
        }

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        students = {k: self.network.students[k]["encoder"] for k in DOMAINS}
        emb = self.network.fused(batch, self.band, students, self.amplitude)
        return torch.cat([emb[k] for k in DOMAINS], dim=-1)

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        temperature = float(self.hp["distill_temperature"])
        with torch.no_grad():
            teacher = self.network.classifier(self.fused_embedding(batch)).float()
            soft = (teacher / temperature).softmax(-1)
        terms = {}
        for k, logits in self.student_logits(batch).items():
            terms[f"{k}_student"] = distillation_loss(
                logits, soft, batch["y"], float(self.hp["distill_soft_weight"]), temperature
            )
        terms["loss"] = torch.stack(list(terms.values())).mean()
        return terms

    def test_extras(
        self, test_set: BrainDataset, batch_size: int, device: torch.device
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Adds each student's and the teacher's test AUC."""
        from brainfuse.methods.torch.module import binary_scores

        metrics, tables = super().test_extras(test_set, batch_size, device)
        probs = self.readout_probabilities(test_set, batch_size, device)
        y = test_set.labels.astype(int)
        per_model = {
            k: binary_scores(y, probs[k])["auc"] if len(y) else math.nan
            for k in (*DOMAINS, "teacher")
        }
        metrics["distillation_auc"] = per_model
        return metrics, tables


#: The stages of MCSP, by name.
STAGES: dict[str, StagePlugin] = {
    "pretrain": StagePlugin(
        MCSPPretrain,
        supervised=False,
        description="MCSP cross-domain + cross-modal contrastive pre-training",
    ),
    "finetune": StagePlugin(
        MCSPFinetune,
        supervised=True,
        description="MCSP fusion classifier (the distillation teacher)",
    ),
    "distill": StagePlugin(
        MCSPDistill,
        supervised=True,
        description="MCSP cross-model distillation into single-domain students",
    ),
}


def stage_plugins(spec: MethodSpec) -> dict[str, StagePlugin]:
    """The stage plugins of a MCSP method (see :attr:`MethodSpec.plugin`)."""
    return dict(STAGES)
