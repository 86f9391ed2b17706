"""Losses of the self-supervised methods: known values and properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from brainfuse.methods.ssl import losses as L

torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_info_nce_lower_for_matched_pairs_than_shuffled(gen):
    a = torch.randn(16, 8, generator=gen)
    b = a + 0.1 * torch.randn(16, 8, generator=gen)
    shuffled = b[torch.randperm(16, generator=gen)]
    assert L.info_nce(a, b, tau=0.1) < L.info_nce(a, shuffled, tau=0.1)


def test_info_nce_known_values():
    # Identical similarities everywhere: the loss is log(B).
    a = torch.ones(5, 3)
    assert L.info_nce(a, a, tau=0.5).item() == pytest.approx(math.log(5), abs=1e-6)
    # Orthonormal matched pairs, small temperature: close to 0.
    eye = torch.eye(4)
    assert L.info_nce(eye, eye, tau=0.01).item() < 1e-6
    # One-directional and symmetric agree for symmetric similarities.
    assert L.info_nce(eye, eye, 0.5, symmetric=False).item() == pytest.approx(
        L.info_nce(eye, eye, 0.5).item()
    )
    # Explicit formula for one direction.
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / 0.2
    expected = -torch.diagonal(logits.log_softmax(-1)).mean()
    assert L.info_nce(a, b, 0.2, symmetric=False).item() == pytest.approx(expected.item(), 1e-5)


def test_info_nce_single_sample_is_zero_and_shapes_checked():
    assert L.info_nce(torch.randn(1, 4), torch.randn(1, 4)).item() == 0.0
    with pytest.raises(ValueError):
        L.info_nce(torch.randn(3, 4), torch.randn(3, 5))


def test_kl_zero_for_equal_distributions_and_positive_otherwise(gen):
    p = torch.softmax(torch.randn(6, 5, generator=gen), -1)
    q = torch.softmax(torch.randn(6, 5, generator=gen), -1)
    assert L.kl_divergence(p, p).item() == pytest.approx(0.0, abs=1e-7)
    assert L.kl_divergence(p, q).item() > 0
    two = torch.tensor([[0.5, 0.5]])
    skew = torch.tensor([[0.9, 0.1]])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert L.kl_divergence(two, skew).item() == pytest.approx(expected, rel=1e-5)


def test_mcsp_distributions_are_softmax(gen):
    h = torch.randn(4, 7, generator=gen)
    z = L.mcsp_distributions(h)
    assert torch.allclose(z.sum(-1), torch.ones(4))
    assert torch.allclose(z, h.softmax(-1))


def test_cross_domain_loss_weights_and_parts(gen):
    domains = ("spatial", "temporal", "frequency")
    original = {d: torch.softmax(torch.randn(8, 6, generator=gen), -1) for d in domains}
    augmented = {d: torch.softmax(torch.randn(8, 6, generator=gen), -1) for d in domains}
    loss, parts = L.cross_domain_loss(original, augmented, tau=0.3, alpha=0.8)
    assert loss.item() == pytest.approx(
        0.8 * parts["in_domain"].item() + 0.2 * parts["cross_domain"].item(), rel=1e-6
    )
    expected_in = sum(L.info_nce(augmented[d], original[d], 0.3) for d in domains) / 3
    assert parts["in_domain"].item() == pytest.approx(expected_in.item(), rel=1e-6)
    # alpha = 1: only the in-domain term.
    only_in, _ = L.cross_domain_loss(original, augmented, tau=0.3, alpha=1.0)
    assert only_in.item() == pytest.approx(parts["in_domain"].item(), rel=1e-6)
    # A single domain has no cross-domain pair.
    single, single_parts = L.cross_domain_loss(
        {"spatial": original["spatial"]}, {"spatial": augmented["spatial"]}, 0.3, 0.8
    )
    assert single_parts["cross_domain"].item() == 0.0


def test_cross_modal_kl_zero_for_equal_distributions(gen):
    z = torch.softmax(torch.randn(8, 6, generator=gen), -1)
    loss, parts = L.cross_modal_loss(z, z.clone(), tau=0.2, alpha=0.8)
    assert parts["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(0.8 * parts["contrastive"].item(), rel=1e-6)
    other = torch.softmax(3 * torch.randn(8, 6, generator=gen), -1)
    _, parts = L.cross_modal_loss(z, other, tau=0.2, alpha=0.8)
    fused = 0.5 * (z + other)
    expected = L.kl_divergence(z, fused) + L.kl_divergence(other, fused)
    assert parts["kl"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["kl"].item() > 0


def test_byol_loss_values(gen):
    x = torch.randn(5, 8, generator=gen)
    assert L.byol_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    # Scale does not matter (normalised vectors); opposite vectors give 4.
    assert L.byol_loss(x, 3 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert L.byol_loss(x, -x).item() == pytest.approx(4.0, abs=1e-5)
    # Orthogonal vectors give 2.
    assert L.byol_loss(torch.eye(3), torch.eye(3).roll(1, 0)).item() == pytest.approx(2.0)
    y = torch.randn(5, 8, generator=gen)
    assert L.symmetric_byol_loss(x, y, y, x).item() == pytest.approx(
        2 * L.byol_loss(x, x).item(), abs=1e-6
    )


def test_byol_target_gets_no_gradient(gen):
    p = torch.randn(4, 3, generator=gen, requires_grad=True)
    z = torch.randn(4, 3, generator=gen, requires_grad=True)
    L.byol_loss(p, z).backward()
    assert p.grad is not None and z.grad is None


def test_ema_update_formula_is_exact():
    torch.manual_seed(0)
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    L.ema_update(target, online, momentum=0.996)
    for name, value in target.state_dict().items():
        expected = 0.996 * before[name] + 0.004 * online.state_dict()[name]
        assert torch.allclose(value, expected, atol=0, rtol=1e-6)
    L.ema_update(target, online, momentum=0.0)
    for name, value in target.state_dict().items():
        assert torch.equal(value, online.state_dict()[name])


def test_ema_update_copies_buffers():
    online, target = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    online.running_mean.fill_(2.0)
    L.ema_update(target, online, 0.9)
    assert torch.equal(target.running_mean, online.running_mean)


def test_masked_mse_counts_only_masked_entries(gen):
    pred = torch.zeros(2, 3)
    target = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert L.masked_mse(pred, target, mask).item() == pytest.approx((1 + 4 + 9) / 3)
    # Values outside the mask never matter.
    changed = target.clone()
    changed[~mask] = -7.0
    assert L.masked_mse(pred, changed, mask).item() == pytest.approx((1 + 4 + 9) / 3)
    # Broadcast mask and an empty mask.
    row = torch.tensor([[True], [False]])
    assert L.masked_mse(pred, target, row).item() == pytest.approx((1 + 4 + 100**2) / 3)
    assert L.masked_mse(pred, target, torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0


def test_distillation_equals_cross_entropy_with_one_hot_teacher(gen):
    logits = torch.randn(6, 2, generator=gen)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    one_hot = F.one_hot(y, 2).float()
    ce = F.cross_entropy(logits, y).item()
    for weight in (0.0, 0.3, 1.0):
        assert L.distillation_loss(logits, one_hot, y, weight).item() == pytest.approx(ce, 1e-6)


def test_distillation_mixes_soft_and_hard_terms(gen):
    logits = torch.randn(6, 2, generator=gen)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    teacher = torch.softmax(torch.randn(6, 2, generator=gen), -1)
    soft = -(teacher * F.log_softmax(logits / 2.0, -1)).sum(-1).mean() * 4.0
    hard = F.cross_entropy(logits, y)
    got = L.distillation_loss(logits, teacher, y, soft_weight=0.25, temperature=2.0)
    assert got.item() == pytest.approx((0.25 * soft + 0.75 * hard).item(), rel=1e-6)
