"""Losses and small training utilities of the self-supervised methods.

Every function is a pure function of its tensor arguments (no module state), so each one can be
checked against a known value:

* :func:`info_nce` - symmetric InfoNCE / NT-Xent between matched rows of two batches;
* :func:`mcsp_distributions`, :func:`cross_domain_loss`, :func:`cross_modal_loss` - MCSP's
  softmax distributions, in-domain + cross-domain and cross-modal objectives;
* :func:`kl_divergence` - KL(p || q) of probability rows;
* :func:`byol_loss` and :func:`ema_update` - BYOL's ``2 - 2 cos`` loss and the EMA target update;
* :func:`masked_mse` - mean squared error over masked entries only;
* :func:`distillation_loss` - soft (teacher probabilities) plus hard (labels) cross-entropy.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "byol_loss",
    "cross_domain_loss",
    "cross_modal_loss",
    "distillation_loss",
    "ema_update",
    "info_nce",
    "kl_divergence",
    "masked_mse",
    "mcsp_distributions",
    "symmetric_byol_loss",
]

_EPS = 1e-8


def info_nce(a: Tensor, b: Tensor, tau: float = 0.1, symmetric: bool = True) -> Tensor:
    """InfoNCE between matched rows of ``a`` and ``b``: row ``i`` of ``a`` should be closer (in
    cosine similarity) to row ``i`` of ``b`` than to any other row of ``b``.

    Parameters
    ----------
    a, b : Tensor
        (B, D) representations; row ``i`` of each comes from the same sample.
    tau : float
        Temperature of the similarity logits.
    symmetric : bool
        Average the ``a -> b`` and ``b -> a`` directions (NT-Xent without the in-view negatives).

    Returns
    -------
    Tensor
        Scalar loss; ``log(B)`` for uninformative representations, towards 0 for perfectly
        matched and well separated ones. A batch of one sample gives 0.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"expected two (B, D) tensors of the same shape, got {a.shape}, {b.shape}")
    if len(a) < 2:
        return a.sum() * 0.0
    logits = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / tau
    target = torch.arange(len(a), device=a.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, target))
    return loss


def kl_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Mean over rows of KL(p || q) for (B, K) probability rows (0 for equal rows)."""
    p, q = p.float().clamp(min=_EPS), q.float().clamp(min=_EPS)
    return (p * (p.log() - q.log())).sum(-1).mean()


def mcsp_distributions(h: Tensor) -> Tensor:
    """MCSP's representation distribution ``z = softmax(h)`` over the projection's units."""
    return h.float().softmax(-1)


def cross_domain_loss(
    original: Mapping[str, Tensor],
    augmented: Mapping[str, Tensor],
    tau: float = 0.1,
    alpha: float = 0.8,
) -> tuple[Tensor, dict[str, Tensor]]:
    """MCSP cross-domain objective of one modality: ``alpha * L_in + (1 - alpha) * L_cross``.

    Parameters
    ----------
    original, augmented : mapping of str to Tensor
        Domain name -> (B, K) distributions ``z = softmax(h)`` of the original and of the
        augmented view of the same samples (same domains in both).
    tau : float
        Temperature.
    alpha : float
        Weight of the in-domain term.

    Returns
    -------
    loss : Tensor
        ``alpha * L_in + (1 - alpha) * L_cross`` where ``L_in`` averages, over domains, InfoNCE
        between a domain's augmented and original view and ``L_cross`` averages InfoNCE between
        the original views of every pair of domains.
    parts : dict of str to Tensor
        ``in_domain`` and ``cross_domain`` (detached).
    """
    domains = list(original)
    l_in = torch.stack([info_nce(augmented[d], original[d], tau) for d in domains]).mean()
    pairs = list(itertools.combinations(domains, 2))
    if pairs:
        l_cross = torch.stack([info_nce(original[x], original[y], tau) for x, y in pairs]).mean()
    else:
        l_cross = l_in * 0.0
    loss = alpha * l_in + (1.0 - alpha) * l_cross
    return loss, {"in_domain": l_in.detach(), "cross_domain": l_cross.detach()}


def cross_modal_loss(
    z_fmri: Tensor, z_eeg: Tensor, tau: float = 0.1, alpha: float = 0.8
) -> tuple[Tensor, dict[str, Tensor]]:
    """MCSP cross-modal objective of one domain: ``alpha * L_con + (1 - alpha) * L_kl``.

    ``L_con`` is InfoNCE between the fMRI and the EEG distribution of the same subjects;
    ``L_kl = KL(z_fmri || z_fused) + KL(z_eeg || z_fused)`` with the fused distribution
    ``z_fused = (z_fmri + z_eeg) / 2`` (so ``L_kl`` is twice the Jensen-Shannon divergence).

    Parameters
    ----------
    z_fmri, z_eeg : Tensor
        (B, K) distributions of paired samples (rows of subjects with both modalities).
    tau, alpha : float
        Temperature and weight of the contrastive term.

    Returns
    -------
    loss : Tensor
    parts : dict of str to Tensor
        ``contrastive`` and ``kl`` (detached).
    """
    fused = 0.5 * (z_fmri.float() + z_eeg.float())
    l_con = info_nce(z_fmri, z_eeg, tau)
    l_kl = kl_divergence(z_fmri, fused) + kl_divergence(z_eeg, fused)
    loss = alpha * l_con + (1.0 - alpha) * l_kl
    return loss, {"contrastive": l_con.detach(), "kl": l_kl.detach()}


def byol_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """BYOL's regression loss ``2 - 2 cos(p, z)``, averaged over the batch.

    0 when every prediction points the same way as its target, 4 when opposite. The target is
    detached (it comes from the EMA network).
    """
    p = F.normalize(prediction.float(), dim=-1)
    z = F.normalize(target.detach().float(), dim=-1)
    return (2.0 - 2.0 * (p * z).sum(-1)).mean()


def symmetric_byol_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """``byol_loss(p1, z2) + byol_loss(p2, z1)``: each view's online prediction regresses the
    target projection of the other view."""
    return byol_loss(p1, z2) + byol_loss(p2, z1)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place: ``target <- momentum * target + (1 - momentum) * online``, parameter-wise;
    buffers (e.g. batch-norm statistics) are copied."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        t.copy_(o)


def masked_mse(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the entries where ``mask`` is True (0 when none is).

    ``mask`` broadcasts against ``prediction``; entries outside it do not count, whatever their
    values.
    """
    mask = mask.to(torch.bool).expand_as(prediction)
    n = mask.sum()
    if n == 0:
        return prediction.sum() * 0.0
    diff = (prediction.float() - target.detach().float()) ** 2
    return diff.masked_fill(~mask, 0.0).sum() / n


def soft_cross_entropy(logits: Tensor, probs: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy of ``softmax(logits / T)`` against probability rows, averaged over rows."""
    log_p = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(probs.detach().float() * log_p).sum(-1).mean()


def distillation_loss(
    student_logits: Tensor,
    teacher_probs: Tensor,
    labels: Tensor,
    soft_weight: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:
    """Knowledge distillation: ``w * T^2 * CE(teacher, student / T) + (1 - w) * CE(labels,
    student)``.

    With a one-hot teacher equal to the labels and ``T = 1`` it equals the plain cross-entropy
    whatever ``w``.

    Parameters
    ----------
    student_logits : Tensor
        (B, C).
    teacher_probs : Tensor
        (B, C) teacher probabilities (already softened with the same temperature, if any).
    labels : Tensor
        (B,) class indices.
    soft_weight : float
        ``w``, the weight of the soft term.
    temperature : float
        ``T`` of the student's softmax in the soft term.
    """
    soft = soft_cross_entropy(student_logits, teacher_probs, temperature) * temperature**2
    hard = F.cross_entropy(student_logits.float(), labels)
    return soft_weight * soft + (1.0 - soft_weight) * hard


def mean_of(values: Iterable[Tensor] | Sequence[Tensor]) -> Tensor:
    """Mean of scalar tensors (helper for averaging losses over domains or modalities)."""
    values = list(values)
    if not values:
        raise ValueError("nothing to average")
    return torch.stack(values).mean()
