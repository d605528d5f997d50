"""Building blocks of the ConvexAdam method."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from SAMRegistrationLib.features.fusion import joint_pca_volumes
from SAMRegistrationLib import field_ops as ops
from SAMRegistrationLib import optimisers as ca
from SAMRegistrationLib.metrics import jacobian_determinant


def test_box3_equals_padded_average_pool():
    x = torch.randn(1, 3, 7, 8, 9)
    reference = F.avg_pool3d(F.pad(x, [1] * 6, mode="replicate"), 3, stride=1)
    assert torch.allclose(ops.box3(x), reference, atol=1e-6)


def test_cost_volume_matches_brute_force_and_label_order():
    torch.manual_seed(0)
    fixed, moving = torch.rand(1, 5, 7, 8, 9), torch.rand(1, 5, 7, 8, 9)
    radius = 2
    cost = ca.ssd_cost_volume(fixed, moving, radius)
    padded = F.pad(moving, [radius] * 6, mode="replicate")[0]
    raw = []
    for dx, dy, dz in ca.shift_offsets(radius, "cpu").long().tolist():
        shifted = padded[:, radius + dz:radius + dz + 7, radius + dy:radius + dy + 8, radius + dx:radius + dx + 9]
        raw.append(((fixed[0] - shifted) ** 2).sum(0))
    assert torch.allclose(cost, ops.box3(ops.box3(torch.stack(raw))), atol=1e-5)


def test_convex_stage_finds_a_known_shift():
    torch.manual_seed(1)
    base = F.avg_pool3d(torch.rand(1, 4, 24, 24, 24), 3, stride=1, padding=1)
    moving = torch.roll(base, shifts=(1, -2, 2), dims=(2, 3, 4))       # moving(p + d) = fixed(p)
    cost = ca.ssd_cost_volume(base, moving, 3)
    field = ca.coupled_convex(cost, ca.shift_offsets(3, "cpu"))
    inner = field[0, :, 6:-6, 6:-6, 6:-6].reshape(3, -1).median(dim=1).values
    assert inner.tolist() == [2.0, -2.0, 1.0]                          # (x, y, z)


def test_jacobian_matches_metrics_and_fold_repair_removes_folds():
    torch.manual_seed(2)
    field = ops.box3(torch.randn(1, 3, 16, 17, 18) * 2.5, times=1)
    det = ops.jacobian_det(field)
    ref = jacobian_determinant(field[0].permute(1, 2, 3, 0).numpy(), (1, 1, 1), np.eye(3))
    assert np.abs(det.numpy() - ref).max() < 1e-4
    assert (det <= 0).sum() > 0, "the test field should fold"
    repaired, folded = ops.repair_folds(field)
    assert folded == int((det <= 0).sum())
    assert int((ops.jacobian_det(repaired) <= 0).sum()) == 0
    untouched = (F.max_pool3d((det <= 0.5)[None, None].float(), 9, stride=1, padding=4)[0, 0] == 0)
    assert torch.equal(repaired[0][:, untouched], field[0][:, untouched])


def test_adam_with_full_mask_equals_unmasked():
    torch.manual_seed(3)
    fixed, moving = torch.rand(1, 4, 10, 11, 12), torch.rand(1, 4, 10, 11, 12)
    init = torch.randn(1, 3, 10, 11, 12) * 0.3
    a = ca.adam_refine(fixed, moving, init, 3, 0.5, 0.5)
    b = ca.adam_refine(fixed, moving, init, 3, 0.5, 0.5, mask=torch.ones(10, 11, 12, dtype=torch.bool))
    assert torch.allclose(a, b, atol=1e-6)


def test_fusion_pca_keeps_the_dominant_subspace():
    torch.manual_seed(4)
    basis, _ = torch.linalg.qr(torch.randn(20, 3))
    fixed = torch.einsum("cd,dzyx->czyx", basis, torch.randn(3, 6, 7, 8)) + 1.0
    moving = torch.einsum("cd,dzyx->czyx", basis, torch.randn(3, 6, 7, 8)) + 1.0
    a, b = joint_pca_volumes(fixed, moving, 3, chunk=50)
    before = torch.cat([fixed.flatten(1), moving.flatten(1)], 1).var(1).sum()
    after = torch.cat([a.flatten(1), b.flatten(1)], 1).var(1).sum()
    assert a.shape == (3, 6, 7, 8) and abs(float(after / before) - 1.0) < 1e-4


def test_box3_passes_and_flat_axes_match_average_pool():
    for shape in [(2, 3, 6, 7, 8), (1, 3, 1, 7, 8), (1, 1, 1, 1, 5)]:
        x = torch.randn(*shape)
        before = x.clone()
        reference = x
        for _ in range(3):
            reference = F.avg_pool3d(F.pad(reference, [1] * 6, mode="replicate"), 3, stride=1)
        assert torch.allclose(ops.box3(x, times=3), reference, atol=1e-5)
        assert torch.equal(x, before), "box3 must not modify its input"


def test_coupled_convex_matches_a_direct_argmin():
    torch.manual_seed(4)
    cost = torch.rand(27, 5, 6, 7)
    offsets = ca.shift_offsets(1, "cpu")
    flat = cost.view(27, -1)
    smooth = ops.box3(offsets[flat.argmin(0)].t().reshape(1, 3, 5, 6, 7))
    for theta in ca.THETAS:                     # the definition: argmin of cost + theta |d - v|^2
        v = smooth.view(3, -1).t()
        score = flat + theta * ((offsets[:, None, :] - v[None]) ** 2).sum(-1)
        smooth = ops.box3(offsets[score.argmin(0)].t().reshape(1, 3, 5, 6, 7))
    assert torch.allclose(ca.coupled_convex(cost, offsets, chunk=17), smooth, atol=1e-6)


def _adam_reference(fixed, moving, init, iterations, lambda_reg, lr, passes=3):
    """The Adam stage with the data gradient from grid_sample's autograd."""
    param = init.clone()
    param.grad = torch.zeros_like(param)
    optimiser = torch.optim.Adam([param], lr=lr)
    for _ in range(iterations):
        field = ops.box3(param, times=passes).requires_grad_(True)
        warped = ops.warp(moving, field)
        ((warped - fixed) ** 2).sum().div(fixed[0, 0].numel()).backward()
        _, reg_grad = ops.diffusion_grad(field.detach())
        param.grad = ops.box3(field.grad + lambda_reg * reg_grad, times=passes)
        optimiser.step()
    return ops.box3(param, times=passes)


def test_adam_stage_gradient_equals_grid_sample_autograd():
    torch.manual_seed(5)
    fixed = F.avg_pool3d(torch.rand(1, 4, 9, 10, 11), 3, stride=1, padding=1)
    moving = torch.roll(fixed, 1, dims=3)
    init = torch.randn(1, 3, 9, 10, 11) * 0.5         # pushes some points past the border
    ours = ca.adam_refine(fixed, moving, init, 4, 0.3, 0.5)
    assert torch.allclose(ours, _adam_reference(fixed, moving, init, 4, 0.3, 0.5), atol=1e-4)


def test_hand_written_adam_step_matches_torch_optim_adam():
    torch.manual_seed(6)
    ours = torch.randn(2, 3, 4)
    theirs = ours.clone().requires_grad_(False)
    reference = torch.optim.Adam([theirs], lr=0.3)
    step = ops.AdamStep(ours, lr=0.3)
    for _ in range(7):
        grad = torch.randn(2, 3, 4) * 5
        theirs.grad = grad.clone()
        reference.step()
        step.step(grad)
    assert torch.allclose(ours, theirs, atol=1e-6)
