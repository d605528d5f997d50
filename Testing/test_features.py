"""MIND-SSC, slice-wise stacks in physical space, joint PCA and the feature cache."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from phantom import oblique_direction, phantom
from SAMRegistrationLib.features.mind import mind_ssc
from SAMRegistrationLib.features.slicewise import (FeatureStack, cached_stack, choose_axis, choose_step,
                                                  encode_stack, joint_pca, project, scale_to_variance)
from SAMRegistrationLib.grid import Grid
from SAMRegistrationLib.resample import sample_tensor
from SAMRegistrationLib.settings import Settings
from SAMRegistrationLib.volume import normalise_intensity


class PoolingSliceEncoder:
    """A real (if trivial) slice encoder: 4x4 average pooling of the intensity, 2 channels."""
    name = "pool"
    canvas = 64
    stride = 4
    channels = 2
    size_multiple = 4
    flexible_size = True
    device = torch.device("cpu")
    batch_size = 4

    def embed(self, slices: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(slices, 4)
        return torch.cat([pooled, pooled ** 2], dim=1)


def test_mind_shape_range_and_intensity_invariance():
    image = torch.from_numpy(sitk.GetArrayFromImage(phantom()))[None, None]
    mind = mind_ssc(image)
    assert mind.shape == (1, 12, *image.shape[-3:])
    assert torch.isfinite(mind).all() and mind.min() > 0 and mind.max() <= 1
    rescaled = mind_ssc(image * 3.0 + 50.0)
    assert torch.allclose(mind, rescaled, atol=1e-4)
    assert torch.isfinite(mind_ssc(torch.ones(1, 1, 8, 8, 8))).all()


def _mind_by_definition(volume: torch.Tensor, radius: int, dilation: int) -> torch.Tensor:
    """MIND-SSC straight from its definition: per pair of six-neighbourhood offsets a, b,
    the patch mean of (I(x + a + k) - I(x + b + k))^2, minus the per-voxel minimum,
    exp(-D / V) with V the channel mean clamped around its global mean."""
    margin = 2 * dilation + radius
    image = F.pad(volume, [margin] * 6, mode="replicate")[0, 0]
    d, h, w = volume.shape[-3:]
    six = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    pairs = [(a, b) for i, a in enumerate(six) for b in six[i + 1:]
             if sum((x - y) ** 2 for x, y in zip(a, b)) == 2]
    channels = []
    for a, b in pairs:
        total = torch.zeros(d, h, w)
        for kz in range(-radius, radius + 1):
            for ky in range(-radius, radius + 1):
                for kx in range(-radius, radius + 1):
                    def at(o):
                        z, y, x = (margin + dilation * o[0] + kz, margin + dilation * o[1] + ky,
                                   margin + dilation * o[2] + kx)
                        return image[z:z + d, y:y + h, x:x + w]
                    total += (at(a) - at(b)) ** 2
        channels.append(total / (2 * radius + 1) ** 3)
    ssd = torch.stack(channels)
    ssd = ssd - ssd.min(0).values
    variance = ssd.mean(0)
    mean = variance.mean()
    return torch.exp(-ssd / variance.clamp(mean * 1e-3, mean * 1e3))[None]


def test_mind_equals_its_definition_whatever_the_slabs():
    torch.manual_seed(0)
    volume = F.interpolate(torch.rand(1, 1, 4, 5, 6), size=(14, 17, 19), mode="trilinear") + 0.05 * torch.rand(1, 1, 14, 17, 19)
    reference = _mind_by_definition(volume, 1, 2)
    for slab in (3, 5, 24):      # one slab sees the whole volume, so the clamp's mean is exact
        ours = mind_ssc(volume, 1, 2, slab=slab)
        assert torch.allclose(ours, reference, atol=1e-5), slab
    pooled = mind_ssc(volume, 1, 2, pool=2, slab=4)
    assert torch.allclose(pooled, F.avg_pool3d(reference, 2, stride=2), atol=1e-5)


def test_stack_features_land_on_the_anatomy():
    """Sampling a slice-wise stack at the image's own voxels gives back the (blurred) image."""
    image, _ = normalise_intensity(phantom(direction=oblique_direction()))
    axis = choose_axis(image, "auto")
    assert axis == 2                                    # the 2.5 mm axis is the acquisition axis
    stack = encode_stack(image, PoolingSliceEncoder(), axis, step=2)
    grid = Grid.from_image(image)
    sampled = sample_tensor(stack.features[:1][None].float(), stack.grid, grid.world_points())[0, 0].numpy()
    truth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, 2.5))
    inside = truth > 0.05
    correlation = np.corrcoef(sampled[inside], truth[inside])[0, 1]
    assert correlation > 0.9, correlation
    # the centre of intensity mass agrees within a millimetre
    points = grid.world_points().numpy()
    com_truth = (points * truth[..., None]).sum((0, 1, 2)) / truth.sum()
    com_stack = (points * sampled[..., None]).sum((0, 1, 2)) / sampled.sum()
    assert np.linalg.norm(com_truth - com_stack) < 1.0


def test_slice_step_and_axis_choice():
    assert choose_step(1.0, None) == 4 and choose_step(2.5, None) == 2 and choose_step(10.0, None) == 1 and choose_step(1.0, 5) == 5
    # the slice budget: 120 anatomy slices at 2.5 mm need every 3rd, not every 2nd; a given step wins
    assert choose_step(2.5, None, 120) == 3 and choose_step(2.5, None, 40) == 2 and choose_step(2.5, 2, 120) == 2
    assert choose_step(1.0, None, 140) == 4
    iso = phantom(size=(30, 40, 50), spacing=(1, 1, 1))
    assert choose_axis(iso, "auto") == 0                 # fewest slices when isotropic
    assert choose_axis(iso, "y") == 1


class _PoolEncoder:
    """A tiny slice encoder: block means and maxima (equivariant to flips and half turns),
    times a column ramp when ``ramp`` (then it is not)."""
    name, canvas, stride, channels, size_multiple, flexible_size, batch_size = "pool", 32, 4, 2, 4, False, 3

    def __init__(self, ramp: bool = False) -> None:
        self.ramp = ramp

    def embed(self, slices: torch.Tensor) -> torch.Tensor:
        out = torch.cat([F.avg_pool2d(slices, 4), F.max_pool2d(slices, 4)], 1)
        if self.ramp:
            out = out * torch.linspace(0.5, 1.5, out.shape[-1])
        return out


def test_every_view_is_undone_on_the_embeddings():
    """An encoder that commutes with flips and half turns gives the same stack through each of
    those views (so their undoing is exact and in the right layout), and nearly the same through
    the zoom; one that does not commute with flips differs."""
    from SAMRegistrationLib.features.slicewise import VIEWS, encode_stack
    image, _ = normalise_intensity(phantom(size=(30, 26, 12), spacing=(1.5, 1.5, 3.0)))
    plain = encode_stack(image, _PoolEncoder(), 2, 2)
    for view in ("identity", "flip-cols", "flip-rows", "rot180"):
        seen = encode_stack(image, _PoolEncoder(), 2, 2, view=view)
        assert seen.features.shape == plain.features.shape and torch.equal(seen.valid, plain.valid)
        assert torch.allclose(seen.features.float(), plain.features.float(), atol=1e-3), view
    # the zoom is undone by sampling the shrunk view's cells: the same content, a little blurred
    zoomed = encode_stack(image, _PoolEncoder(), 2, 2, view="zoom-out")
    assert zoomed.features.shape == plain.features.shape and set(VIEWS) > {"zoom-out"}
    mean = zoomed.features[0].float().flatten()
    reference = plain.features[0].float().flatten()
    assert torch.corrcoef(torch.stack([mean, reference]))[0, 1] > 0.97     # 0.93 if left undone
    ramp_plain = encode_stack(image, _PoolEncoder(ramp=True), 2, 2)
    ramp_flipped = encode_stack(image, _PoolEncoder(ramp=True), 2, 2, view="flip-cols")
    assert not torch.allclose(ramp_plain.features.float(), ramp_flipped.features.float(), atol=1e-2)


def _random_stack(seed: int, basis: torch.Tensor) -> FeatureStack:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(basis.shape[1], 6, 7, 8, generator=g)
    feats = torch.einsum("cd,dzyx->czyx", basis, codes) + 0.01 * torch.randn(basis.shape[0], 6, 7, 8, generator=g)
    grid = Grid((8, 7, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    return FeatureStack(grid, feats.half(), torch.ones(6, 7, 8, dtype=torch.bool))


def test_joint_pca_finds_the_shared_subspace_and_scaling():
    basis, _ = torch.linalg.qr(torch.randn(32, 3, generator=torch.Generator().manual_seed(0)))
    stacks = [_random_stack(1, basis), _random_stack(2, basis)]
    mean, components = joint_pca(stacks, 3)
    assert components.shape == (32, 3)
    # the found 3D subspace equals the generating one
    overlap = torch.linalg.svdvals(basis.T @ components)
    assert overlap.min() > 0.99
    a, b = project(stacks[0], mean, components)[0], project(stacks[1], mean, components)[0]
    valid = torch.ones(a.shape[1:], dtype=torch.bool)
    a, b = scale_to_variance(a, b, valid, valid, target=1.0)
    total = torch.cat([a.flatten(1), b.flatten(1)], 1).var(1).sum()
    assert abs(float(total) - 1.0) < 0.05


def test_feature_cache_hit_miss_and_damage(tmp_path):
    settings = Settings(cache_dir=str(tmp_path / "cache"))
    image, _ = normalise_intensity(phantom())
    calls = []

    def make():
        calls.append(1)
        return encode_stack(image, PoolingSliceEncoder(), 2, 2)

    first, hit1 = cached_stack(image, "pool", "v1", 2, 2, settings, make)
    second, hit2 = cached_stack(image, "pool", "v1", 2, 2, settings, make)
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    assert torch.equal(first.features, second.features) and first.grid == second.grid
    # other settings or other content miss
    _, hit3 = cached_stack(image, "pool", "v1", 2, 3, settings, make)
    changed = sitk.Image(image)
    changed[5, 5, 5] = 0.5
    _, hit4 = cached_stack(changed, "pool", "v1", 2, 2, settings, make)
    assert not hit3 and not hit4 and len(calls) == 3
    # a damaged entry is rebuilt, not fatal
    for entry in (tmp_path / "cache").iterdir():
        entry.write_bytes(b"garbage")
    _, hit5 = cached_stack(image, "pool", "v1", 2, 2, settings, make)
    assert not hit5 and len(calls) == 4
    # use_cache=False never reads or writes
    settings = settings.replaced(use_cache=False)
    _, hit6 = cached_stack(image, "pool", "v1", 2, 2, settings, make)
    assert not hit6 and len(calls) == 5


def test_canvas_override_sets_the_embedding_resolution():
    """``canvas`` sets the encoded slice's longer side, so the embedding cells scale with it and
    still cover the same anatomy (the lattice keeps its physical extent)."""
    image, _ = normalise_intensity(phantom(direction=oblique_direction()))
    axis = choose_axis(image, "auto")
    full = encode_stack(image, PoolingSliceEncoder(), axis, step=2)
    half = encode_stack(image, PoolingSliceEncoder(), axis, step=2, canvas=32)
    in_plane = [a for a in range(3) if a != axis]
    assert max(full.grid.size[a] for a in in_plane) == 64 // 4
    assert max(half.grid.size[a] for a in in_plane) == 32 // 4
    for a in in_plane:
        extent_full = full.grid.size[a] * full.grid.spacing[a]
        extent_half = half.grid.size[a] * half.grid.spacing[a]
        assert abs(extent_full - extent_half) <= full.grid.spacing[a] * 2


def test_cache_identity_names_the_route_and_the_canvas():
    """Stacks encoded by another numeric route or canvas are other cache entries; asking for
    ``auto`` on this CPU names the route it resolves to, and nothing loads the model."""
    from SAMRegistrationLib.encoders.litemedsam import LiteMedSAMParams
    from SAMRegistrationLib.features.litemedsam import native_bf16, resolve_precision
    from SAMRegistrationLib.features.slicewise import SliceWiseEncoder

    def never_loaded(settings):
        raise AssertionError("identity must not load the model")

    def identity(**params):
        settings = Settings(encoder="litemedsam", device="cpu", encoder_params=params)
        return SliceWiseEncoder("litemedsam", settings, never_loaded).identity()

    fp32, bf16 = identity(precision="fp32"), identity(precision="bf16")
    assert len({fp32, bf16, identity(precision="bf16", canvas=192)}) == 3
    assert identity(precision="auto") == (bf16 if native_bf16(torch.device("cpu")) else fp32)
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert LiteMedSAMParams().canvas == 224
