"""The pyramid (SAMConvex-style) method: its algorithm on tensors, its parameters, and the method
through the pipeline (the contract tests of every method run on it too)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from phantom import interior_mask, oblique_direction, phantom, register_images, translated
from SAMRegistrationLib.field_ops import jacobian_det, warp
from SAMRegistrationLib import plugins
from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.methods.pyramid import run
from SAMRegistrationLib.methods.pyramid.algorithm import compose, pyramid_register, unit_features
from SAMRegistrationLib.settings import Settings


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: these kernels are small, and on a shared machine OpenMP threads that wait
    for each other make them many times slower (measured 20x under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _features(shape=(24, 28, 32), channels=6, seed=0) -> torch.Tensor:
    """Smooth random (C, D, H, W) features with structure at several scales."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, *shape, generator=g)
    for _ in range(3):
        x = torch.nn.functional.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)
    return (x / x.std())[0]


def test_registered_and_unit_features():
    assert plugins.method_plugin("pyramid").run is run
    x = torch.randn(1, 5, 4, 4, 4) * 3.0
    x[..., 0, 0, 0] = 0.0
    u = unit_features(x)
    norms = u.norm(dim=1)
    assert torch.allclose(norms[0, 1:], torch.ones_like(norms[0, 1:]), atol=1e-5)
    assert float(norms[0, 0, 0, 0]) == 0.0           # empty voxels stay empty, not NaN


def test_compose_matches_sequential_warps():
    """moving(x + w(x)) == (moving o (id + u)) (x + v(x)) for w = v + u o (id + v)."""
    moving = _features(channels=2)[None]
    shape = moving.shape[-3:]
    z = torch.linspace(0, 1, shape[0])[:, None, None]
    u = torch.stack([1.5 * torch.sin(3 * z).expand(*shape), 0.7 * torch.ones(shape), torch.zeros(shape)])[None]
    v = torch.stack([torch.zeros(shape), 0.8 * torch.cos(2 * z).expand(*shape), 0.5 * torch.ones(shape)])[None]
    sequential = warp(warp(moving, u), v)
    once = warp(moving, compose(v, u))
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3), slice(3, -3))
    assert float((sequential - once)[inner].abs().max()) < 0.05 * float(moving.abs().max())


def test_identical_features_give_near_zero_field():
    f = _features()
    convex = pyramid_register(f, f.clone(), iterations=0)
    assert convex.displacement.shape == (1, 3, *f.shape[-3:])
    assert float(convex.displacement.abs().max()) < 1e-6
    # Adam's trilinear gradient is one-sided at whole-voxel positions, so it jitters a little
    refined = pyramid_register(f, f.clone(), iterations=30, learning_rate=0.2).displacement
    assert float(refined.norm(dim=1).quantile(0.95)) < 0.1


def test_translation_beyond_one_level_is_recovered_on_tensors():
    """A 7-voxel shift: beyond the finest level's radius 3, within the pyramid's reach."""
    big = _features(shape=(40, 44, 48))
    shift = (7, -5, 3)                                   # (x, y, z) voxels
    fixed = big[:, 8:32, 8:36, 8:40]
    moving = big[:, 8 - shift[2]:32 - shift[2], 8 - shift[1]:36 - shift[1], 8 - shift[0]:40 - shift[0]]
    # moving(p) = big(p - s) and fixed(p) = big(p): fixed(p) = moving(p + s), so u = +s
    result = pyramid_register(fixed, moving, iterations=20)
    u = result.displacement[0, :, 4:-4, 4:-4, 4:-4].reshape(3, -1)
    error = (u - torch.tensor(shift, dtype=torch.float32)[:, None]).norm(dim=0)
    assert float(error.median()) < 0.5, float(error.median())
    assert float(jacobian_det(result.displacement).min()) > 0


def test_bad_level_lists_are_refused():
    f = _features(shape=(8, 8, 8))
    with pytest.raises(ValueError):
        pyramid_register(f, f, factors=(4, 2, 1), radii=(2, 3))
    for values, words in (({"radii": [2, 3]}, "equal length"), ({"factors": [1, 2, 4], "radii": [2, 3, 3]}, "coarse to fine"),
                          ({"radii": [2, 3, 9]}, "radii 1..6"), ({"factors": [4, 2.5, 1]}, "factors.1")):
        with pytest.raises(InputError, match=words) as raised:
            Settings.parse({"method": "pyramid", "method_params": values})
        assert "\n" not in str(raised.value)


def _register(tmp_path, fixed: sitk.Image, moving: sitk.Image, **params):
    settings = Settings(encoder="mind", method="pyramid", use_cache=False, affine=False, threads=1,
                        method_params=params)
    return register_images(tmp_path, fixed, moving, settings)


def test_pipeline_recovers_6mm_translation_oblique_anisotropic(tmp_path):
    """7.8 mm in all, 6 mm along x: more than the finest level (3 voxels at 1.4 mm) can reach."""
    fixed = phantom(direction=oblique_direction())          # spacing (1.6, 1.4, 2.5), rotated axes
    shift = np.array([6.0, -4.0, 3.0])
    report, disp = _register(tmp_path, fixed, translated(fixed, shift))
    u = sitk.GetArrayFromImage(disp)[interior_mask(fixed)]
    error = np.linalg.norm(u - shift, axis=1)
    assert np.median(error) < 1.0, f"median endpoint error {np.median(error):.2f} mm"
    assert report["metrics"]["fold_percent"] == 0.0
    # same contrast: the Adam stage refines at full resolution, so the pyramid stops at 1/2
    assert [level["factor"] for level in report["resolved"]["method"]["levels"]] == [4, 2]


def _inverted(image: sitk.Image) -> sitk.Image:
    """The anatomy's contrast reversed, the background kept dark."""
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    inside = values > np.percentile(values, 60)
    out = np.where(inside, values.max() + values[inside].min() - values, values)
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    return result


def test_the_adam_stage_and_its_intensity_channel_follow_the_contrast(tmp_path):
    fixed = phantom(seed=4)
    moving = translated(fixed, np.array([2.0, -1.5, 1.0]))
    for name in ("same", "cross", "plain"):
        (tmp_path / name).mkdir()
    same, _ = _register(tmp_path / "same", fixed, moving)
    info = same["resolved"]["method"]
    assert info["same_contrast"] and info["adam_iterations"] == 50
    assert info["intensity_weight"] == 4.0 and info["intensity_scale"] > 0       # MR pair: weight 4
    assert [level["factor"] for level in info["levels"]] == [4, 2]
    cross, _ = _register(tmp_path / "cross", fixed, _inverted(moving))
    info = cross["resolved"]["method"]
    assert not info["same_contrast"] and info["adam_iterations"] == 0 and info["intensity_weight"] == 0.0
    assert [level["factor"] for level in info["levels"]] == [4, 2, 1]          # no Adam: the full level
    plain, _ = _register(tmp_path / "plain", fixed, moving, iterations=0, intensity_weight=1.0)
    info = plain["resolved"]["method"]
    assert info["adam_iterations"] == 0 and info["intensity_weight"] == 0.0
    assert [level["factor"] for level in info["levels"]] == [4, 2, 1]


def test_pipeline_identical_images_near_zero(tmp_path):
    fixed = phantom(seed=2)
    report, disp = _register(tmp_path, fixed, fixed)
    u = sitk.GetArrayFromImage(disp)[interior_mask(fixed)]
    assert np.percentile(np.linalg.norm(u, axis=1), 95) < 0.3
    assert report["metrics"]["fold_percent"] == 0.0
