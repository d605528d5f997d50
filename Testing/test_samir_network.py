"""SAMIR's network and losses: shapes, identity at initialisation, integration, composition,
and losses that fall when the field is right."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from SAMRegistrationLib.field_ops import jacobian_det, warp
from SAMRegistrationLib.learned.samir.losses import diffusion_loss, dice_loss, hfc_loss, local_ncc_loss
from SAMRegistrationLib.learned.samir.network import SamirNet, compose, integrate, upsample_field


def _blobs(shape=(16, 16, 16), channels=3, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, channels, *(max(2, n // 4) for n in shape), generator=g)
    return F.interpolate(low, size=shape, mode="trilinear", align_corners=True)


def _shift(x: torch.Tensor, voxels: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x sampled at p + (voxels, 0, 0): the moving image whose true field is that constant."""
    field = torch.zeros(1, 3, *x.shape[-3:])
    field[:, 0] = voxels
    return warp(x, field), field


def test_untrained_network_is_the_identity_and_shapes_follow_the_levels():
    torch.manual_seed(0)
    net = SamirNet(in_channels=3, head_channels=4, width=8, levels=3, steps=4)
    fields = net(_blobs(), _blobs(seed=1))
    assert [tuple(f.shape) for f in fields] == [(1, 3, 16, 16, 16), (1, 3, 8, 8, 8), (1, 3, 4, 4, 4)]
    assert all(float(f.detach().abs().max()) == 0.0 for f in fields)   # zero-initialised velocity heads


def test_scaling_and_squaring_gives_an_invertible_field():
    torch.manual_seed(1)
    v = F.interpolate(torch.randn(1, 3, 3, 3, 3) * 2.5, size=(20, 20, 20), mode="trilinear", align_corners=True)
    forward, backward = integrate(v, 7), integrate(-v, 7)
    assert float(jacobian_det(forward).min()) > 0
    round_trip = compose(forward, backward)[..., 3:-3, 3:-3, 3:-3]  # exp(v) then exp(-v): the identity
    largest = float(forward.abs().max())                           # about 7 voxels here
    assert float(round_trip.abs().max()) < 0.06 * largest and float(round_trip.abs().mean()) < 0.01 * largest
    # a constant velocity integrates to itself
    const = torch.zeros(1, 3, 8, 8, 8)
    const[:, 1] = 1.5
    assert torch.allclose(integrate(const, 5)[..., 2:-2, 2:-2, 2:-2], const[..., 2:-2, 2:-2, 2:-2], atol=1e-5)


def test_upsampling_rescales_voxel_displacements():
    field = torch.zeros(1, 3, 4, 4, 4)
    field[:, 2] = 1.0                                              # one coarse voxel along z
    fine = upsample_field(field, (7, 7, 7))                         # (7 - 1) / (4 - 1) = 2 fine voxels
    assert torch.allclose(fine[:, 2], torch.full_like(fine[:, 2], 2.0))


def test_losses_are_lowest_at_the_true_field():
    image = _blobs(channels=1)
    features = _blobs(channels=4, seed=3)
    moving_image, true = _shift(image, 2.0)
    moving_features, _ = _shift(features, 2.0)
    # moving(p) = x(p + t) so x(p) ~ moving(p - t): the field that maps fixed to moving is -t
    right, wrong = -true, torch.zeros_like(true)
    assert local_ncc_loss(image, warp(moving_image, right)) < local_ncc_loss(image, warp(moving_image, wrong))
    pyramid = [right, F.avg_pool3d(right, 2) / 2]
    zeros = [torch.zeros_like(f) for f in pyramid]
    assert hfc_loss(features, moving_features, pyramid) < hfc_loss(features, moving_features, zeros)
    labels = (image > image.median()).float()
    moving_labels, _ = _shift(labels, 2.0)
    assert dice_loss(labels, moving_labels, right) < dice_loss(labels, moving_labels, wrong)
    assert float(diffusion_loss(zeros)) == 0.0 and float(diffusion_loss([torch.randn(1, 3, 6, 6, 6)])) > 0


def test_one_training_step_moves_the_field_the_right_way():
    """A few Adam steps on NCC + HFC + diffusion for a known shift: the finest field's mean
    x displacement heads to the true -2 voxels."""
    torch.manual_seed(0)
    net = SamirNet(in_channels=4, head_channels=4, width=8, levels=2, steps=4)
    features = _blobs(channels=4, seed=5)
    image = features[:, :1]
    moving_features, _ = _shift(features, 2.0)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(30):
        fields = net(features, moving_features)
        loss = local_ncc_loss(image, warp(moving_features[:, :1], fields[0])) \
            + hfc_loss(features, moving_features, fields) + 0.1 * diffusion_loss(fields)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    mean_x = float(net(features, moving_features)[0][:, 0, 4:-4, 4:-4, 4:-4].mean())
    assert mean_x < -0.5 and math.isfinite(mean_x), mean_x


def test_frozen_projection_has_unit_variance_and_samples_the_stack():
    """The projection fitted on stacks gives their foreground tokens unit total variance, and
    sampling on the stack's own grid gives back the projected lattice (zero off the anatomy)."""
    from SAMRegistrationLib.features.slicewise import FeatureStack, project
    from SAMRegistrationLib.grid import Grid
    from SAMRegistrationLib.learned.samir.frozen import FrozenProjection, fit_projection, frozen_on_grid

    g = torch.Generator().manual_seed(0)
    grid = Grid((6, 5, 4), (2.0, 2.0, 3.0), (10.0, -5.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    mixing = torch.randn(16, 3, generator=g)
    stacks = []
    for _ in range(2):
        latent = torch.randn(3, 4, 5, 6, generator=g)                # (C, D, H, W): z, y, x
        features = torch.einsum("ck,kdhw->cdhw", mixing, latent) + 0.01 * torch.randn(16, 4, 5, 6, generator=g)
        valid = torch.ones(4, 5, 6, dtype=torch.bool)
        valid[0] = False
        stacks.append(FeatureStack(grid, features.half(), valid))
    projection = fit_projection(stacks, dims=3)
    tokens = torch.cat([(project(s, projection.mean, projection.basis)[0] * projection.scale).flatten(1)[:, s.valid.flatten()]
                        for s in stacks], 1)
    assert abs(float(tokens.var(1).sum()) - 1.0) < 0.02
    sampled = frozen_on_grid(stacks[0], projection, grid)
    expected = project(stacks[0], projection.mean, projection.basis)[0] * projection.scale
    assert torch.allclose(sampled[:, 1:], expected[:, 1:], atol=1e-4)
    assert float(sampled[:, 0].abs().max()) == 0.0                  # no anatomy in the first slice
    again = FrozenProjection.from_state(projection.state())
    assert torch.equal(again.basis, projection.basis) and again.scale == projection.scale


def test_model_keeps_its_projection_in_the_state_dict_and_predicts_any_size():
    from SAMRegistrationLib.learned.samir.frozen import FrozenProjection
    from SAMRegistrationLib.learned.samir.model import SamirConfig, SamirModel, predict

    config = SamirConfig(dims=4, head_channels=4, width=8, levels=3, steps=3)
    assert config.in_channels == 5 and SamirConfig.parse(config.to_dict()) == config
    g = torch.Generator().manual_seed(0)
    projection = FrozenProjection(torch.randn(256, generator=g), torch.randn(256, 4, generator=g), 0.5)
    model = SamirModel(config, projection)
    torch.manual_seed(1)
    for p in model.net.parameters():                    # a non-trivial field
        torch.nn.init.normal_(p, std=0.05)
    restored = SamirModel(config)
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.projection().basis, projection.basis) and restored.projection().scale == 0.5
    fixed, moving = _blobs((11, 13, 9), channels=5), _blobs((11, 13, 9), channels=5, seed=2)
    with torch.no_grad():
        fields = predict(model, fixed, moving)
        again = predict(restored, fixed, moving)
    assert tuple(fields[0].shape) == (1, 3, 11, 13, 9) and tuple(fields[1].shape) == (1, 3, 6, 7, 5)
    assert float(fields[0].abs().max()) > 0 and torch.allclose(fields[0], again[0])


class _MixingSliceEncoder:
    """A real (if simple) 256-channel slice encoder: 4x4 pooled intensity and its square, mixed
    into 256 channels by a fixed random matrix."""
    name, canvas, stride, channels, size_multiple, flexible_size, batch_size = "mix", 64, 4, 256, 4, True, 8

    def __init__(self) -> None:
        self.mixing = torch.randn(256, 3, generator=torch.Generator().manual_seed(7))

    def embed(self, slices: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(slices, 4)
        basis = torch.cat([pooled, pooled ** 2, F.avg_pool2d(pooled, 3, 1, 1)], 1)
        return torch.einsum("ck,bkhw->bchw", self.mixing, basis)


def test_network_then_refinement_recovers_a_known_shift(tmp_path):
    """An untrained model gives the identity; refining it on the pair recovers a 3 mm shift of a
    phantom (the refinement is what a user gets with instance optimisation); the saved model
    reloads through weights_only, and a wrong SHA-256 or someone else's file is a clear error."""
    import pytest
    from phantom import phantom, translated
    from SAMRegistrationLib.errors import CheckpointError
    from SAMRegistrationLib.features.slicewise import encode_stack
    from SAMRegistrationLib.grid import Grid
    from SAMRegistrationLib.learned.samir.frozen import fit_projection
    from SAMRegistrationLib.learned.refinement import network_grid, on_working_grid, refine
    from SAMRegistrationLib.learned.samir.inference import load_model, network_field, pair_inputs
    from SAMRegistrationLib.learned.samir.model import SamirConfig, SamirModel
    from SAMRegistrationLib.volume import normalise_intensity

    fixed01, _ = normalise_intensity(phantom(spacing=(2.0, 2.0, 2.0)))
    moving01, _ = normalise_intensity(translated(phantom(spacing=(2.0, 2.0, 2.0)), (3.0, 0.0, 0.0), fixed01))
    encoder = _MixingSliceEncoder()
    stacks = [encode_stack(image, encoder, 2, step=1) for image in (fixed01, moving01)]
    config = SamirConfig(dims=6, head_channels=4, width=8, levels=2, steps=4, spacing=2.0)
    model = SamirModel(config, fit_projection(stacks, 6))
    from SAMRegistrationLib.training.checkpointing import write_model
    path = tmp_path / "model.pt"
    write_model({"kind": "samreg-model", "task": "samir", "model": model.state_dict(),
                 "task_config": config.to_dict(), "data_hash": ""}, path)
    model = load_model(path)
    grid = Grid.from_image(fixed01)
    inputs = pair_inputs(model, stacks[0], stacks[1], fixed01, moving01, None, network_grid(grid, config.spacing))
    assert inputs.fixed.shape[1] == 7 and inputs.grid.size == grid.size
    field = network_field(model, inputs)
    assert float(field.abs().max()) == 0.0
    refined = refine(inputs, field, iterations=80, lambda_reg=0.1, learning_rate=0.2)
    on_grid = on_working_grid(inputs.grid, refined, grid.with_spacing(4.0))      # world mm, on a coarser grid
    inside = (slice(2, -2), slice(3, -3), slice(3, -3))                     # (z, y, x), away from the border
    mean_x_mm = float(on_grid.data[0, 0][inside].mean())
    assert 2.0 < mean_x_mm < 4.0, mean_x_mm
    with pytest.raises(CheckpointError, match="corrupt or not the one expected"):
        load_model(path, sha256="0" * 64)
    other = tmp_path / "other.pt"
    write_model({"kind": "samreg-model", "task": "tiny-net", "model": {}, "task_config": {}, "data_hash": ""}, other)
    with pytest.raises(CheckpointError, match="trained by 'tiny-net', not 'samir'"):
        load_model(other)
    stranger = tmp_path / "stranger.pt"
    torch.save({"weights": torch.zeros(3)}, stranger)
    with pytest.raises(CheckpointError):
        load_model(stranger)


def test_objective_trains_the_model_on_a_shifted_pair_with_labels_and_across_contrasts():
    """The whole objective (NCC or MIND, HFC, Dice, diffusion) falls over a few Adam steps on a
    known shift, on an odd-sized grid; across contrasts the MIND term is used instead of NCC."""
    from SAMRegistrationLib.learned.samir.model import SamirConfig, SamirModel
    from SAMRegistrationLib.learned.samir.training import objective

    torch.manual_seed(0)
    config = SamirConfig(dims=3, head_channels=4, width=8, levels=2, steps=4)
    model = SamirModel(config)
    frozen = _blobs((15, 16, 17), channels=3, seed=4)
    image = frozen[:, :1]
    fixed_in = torch.cat([frozen, image], 1)
    moving_in, _ = _shift(fixed_in, 2.0)
    labels = (image > image.median()).float()
    moving_labels = (_shift(labels, 2.0)[0] > 0.5).float()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        loss, parts = objective(model, fixed_in, moving_in, image, moving_in[:, 3:], True, labels, moving_labels, [1])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(parts["total"])
    assert set(parts) == {"image", "hfc", "diffusion", "dice", "total"}
    assert history[-1] < 0.9 * history[0], history
    _, across = objective(model, fixed_in, moving_in, image, 1.0 - moving_in[:, 3:], same_contrast=False)
    assert "dice" not in across and across["image"] > 0


def test_local_correlation_peaks_at_the_offset_of_a_shift():
    """Moving features shifted by one voxel along x: the correlation channel of that offset is 1
    in the interior and larger than every other offset's."""
    from SAMRegistrationLib.learned.samir.network import local_correlation
    fixed = torch.randn(1, 8, 10, 10, 10, generator=torch.Generator().manual_seed(0))
    moving = torch.roll(fixed, shifts=1, dims=4)               # moving(x + 1) = fixed(x)
    corr = local_correlation(fixed, moving, radius=1)
    assert corr.shape == (1, 27, 10, 10, 10)
    inner = corr[0, :, 2:-2, 2:-2, 2:-2]
    best = inner.mean(dim=(1, 2, 3)).argmax()
    assert int(best) == 1 * 9 + 1 * 3 + 2                       # offset (z, y, x) = (0, 0, +1)
    assert torch.allclose(inner[best], torch.ones_like(inner[best]), atol=1e-5)
