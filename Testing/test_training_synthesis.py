"""Synthetic training data: diffeomorphic random deformations, their inverses, intensity changes
and SynthMorph-style images."""
from __future__ import annotations

import pytest
import torch

from SAMRegistrationLib.field_ops import jacobian_det
from SAMRegistrationLib.training.synthesis import (augment_intensity, compose, integrate_velocity, random_bias,
                                                   random_gamma, random_noise, random_velocity, synthmorph_image,
                                                   warp_nearest)

SHAPE = (28, 32, 30)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integrated_velocity_is_diffeomorphic_where_its_euler_step_folds(seed):
    velocity = random_velocity(SHAPE, _generator(seed), max_voxels=6.0, smooth_voxels=8.0)
    assert velocity.shape == (1, 3, *SHAPE)
    assert float(velocity.abs().amax()) == pytest.approx(6.0, rel=1e-5)
    field = integrate_velocity(velocity, steps=7)
    assert float(field.abs().amax()) > 2.0                   # a real deformation
    assert float(jacobian_det(field).amin()) > 0.0
    # the same velocity used as a displacement directly folds: integration is what prevents it
    assert float(jacobian_det(velocity * 2.5).amin()) < 0.0


def test_integrating_the_negated_velocity_gives_the_inverse():
    velocity = random_velocity(SHAPE, _generator(5), max_voxels=4.0, smooth_voxels=10.0)
    forward, inverse = integrate_velocity(velocity), integrate_velocity(-velocity)
    interior = (slice(None), slice(4, -4), slice(4, -4), slice(4, -4))   # no border clamping
    size = forward.norm(dim=1)[interior]
    for error in (compose(forward, inverse), compose(inverse, forward)):
        residual = error.norm(dim=1)[interior]
        assert float(residual.max()) < 0.1 * float(size.max())
        assert float(residual.mean()) < 0.02 * float(size.mean()) + 0.01
    # a wrong inverse (the forward field negated, as if small) is clearly worse
    naive = compose(forward, -forward).norm(dim=1)[interior]
    assert float(naive.mean()) > 3 * float(compose(forward, inverse).norm(dim=1)[interior].mean())


def test_synthesis_is_determined_by_the_seed():
    a = integrate_velocity(random_velocity(SHAPE, _generator(7), 3.0, 8.0))
    b = integrate_velocity(random_velocity(SHAPE, _generator(7), 3.0, 8.0))
    c = integrate_velocity(random_velocity(SHAPE, _generator(8), 3.0, 8.0))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    image = torch.rand(1, 1, *SHAPE, generator=_generator(0))
    assert torch.equal(augment_intensity(image, _generator(3), 0.3, 0.3, 0.05),
                       augment_intensity(image, _generator(3), 0.3, 0.3, 0.05))
    labels = (torch.rand(1, 1, *SHAPE, generator=_generator(1)) * 4).long()
    assert torch.equal(synthmorph_image(labels, _generator(2)), synthmorph_image(labels, _generator(2)))


def test_intensity_changes_stay_in_the_unit_range_and_change_the_image():
    image = torch.rand(1, 1, *SHAPE, generator=_generator(0))
    image[..., :4] = 0.0
    image[..., -4:] = 1.0
    for seed in range(5):
        g = _generator(seed)
        outputs = [random_gamma(image, g, 1.0), random_bias(image, g, 1.0), random_noise(image, g, 0.3),
                   augment_intensity(image, g, 1.0, 1.0, 0.3)]
        for out in outputs:
            assert out.shape == image.shape
            assert float(out.amin()) >= 0.0 and float(out.amax()) <= 1.0
            assert float((out - image).abs().amax()) > 1e-6
    zero = random_gamma(image, _generator(0), 0.0)
    assert torch.allclose(zero, image)                         # no range: no change


def test_synthmorph_image_gives_each_label_one_intensity_up_to_noise():
    labels = torch.zeros(1, 1, *SHAPE, dtype=torch.long)
    labels[..., 5:15, :, :] = 3
    labels[..., 15:, 4:20, :] = 7
    labels[..., 15:, 20:, 10:] = 12
    noise = 0.02
    image = synthmorph_image(labels, _generator(4), blur=0.0, bias=0.0, noise=noise, gamma=0.0)
    assert float(image.amin()) >= 0.0 and float(image.amax()) <= 1.0
    regions = [image[labels == value] for value in (0, 3, 7, 12)]
    # one intensity per label: the label explains nearly all of the image's variance, the rest is noise
    within = sum(float(region.var(unbiased=False)) * region.numel() for region in regions) / image.numel()
    assert within < 0.02 * float(image.var(unbiased=False))
    assert 0.0 < max(float(region.std()) for region in regions)        # and the in-label noise is there
    # the same labels moved move the intensities with them
    shifted = torch.roll(labels, 3, dims=-1)
    moved = synthmorph_image(shifted, _generator(4), blur=0.0, bias=0.0, noise=0.0, gamma=0.0)
    plain = synthmorph_image(labels, _generator(4), blur=0.0, bias=0.0, noise=0.0, gamma=0.0)
    assert torch.allclose(torch.roll(plain, 3, dims=-1), moved, atol=1e-5)


def test_nearest_neighbour_warp_keeps_label_values():
    labels = torch.zeros(1, 1, *SHAPE, dtype=torch.long)
    labels[..., 8:20, 8:20, 8:20] = 5
    labels[..., 12:16, 12:16, 12:16] = 9
    field = integrate_velocity(random_velocity(SHAPE, _generator(1), 3.0, 8.0))
    warped = warp_nearest(labels, field)
    assert warped.dtype == torch.long
    assert set(torch.unique(warped).tolist()) == {0, 5, 9}
    assert not torch.equal(warped, labels)
