"""The engine's automatic choices: the encoder from the contrasts, the working spacing from the
field of view, the Adam grid from the spacing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from phantom import phantom, smooth_field, warped_by
from SAMRegistrationLib.features import auto
from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.grid import Grid
from SAMRegistrationLib.methods.convexadam import ADAM_VOXEL_BUDGET, adam_grid_factor
from SAMRegistrationLib.pipeline import default_spacing
from SAMRegistrationLib.settings import Settings
from SAMRegistrationLib.volume import normalise_intensity


def _inverted(image: sitk.Image) -> sitk.Image:
    """Same anatomy, contrast reversed inside the body (bright becomes dark), like T1 vs T2."""
    array = sitk.GetArrayFromImage(image)
    out = sitk.GetImageFromArray(np.where(array > 0, 1200.0 - array, 0.0).astype(np.float32))
    out.CopyInformation(image)
    return out


def _pair(moving: sitk.Image, fixed: sitk.Image):
    fixed01, _ = normalise_intensity(fixed, "mr")
    moving01, _ = normalise_intensity(moving, "mr")
    return fixed01, moving01, sitk.AffineTransform(3), Grid.from_image(fixed)


def test_same_contrast_keeps_the_fusion_and_reversed_contrast_takes_mind():
    fixed = phantom(size=(40, 36, 30), spacing=(1.5, 1.5, 1.5))
    deformed = warped_by(fixed, smooth_field(fixed, amplitude_mm=2.0))
    gamma = sitk.Pow(sitk.Cast(deformed, sitk.sitkFloat32) / 1000.0, 1.3) * 1000.0   # monotone change
    same = auto.contrast_agreement(*_pair(gamma, fixed))
    reversed_ = auto.contrast_agreement(*_pair(_inverted(deformed), fixed))
    assert same > auto.SAME_CONTRAST_MIN and auto.choose_encoder(same) == auto.FUSED
    assert reversed_ < 0 and auto.choose_encoder(reversed_) == auto.CROSS_CONTRAST


def test_no_shared_anatomy_gives_no_verdict_and_keeps_the_fusion():
    fixed = phantom(size=(30, 30, 20), spacing=(2.0, 2.0, 2.0))
    fixed01, moving01, _, grid = _pair(fixed, fixed)
    far = sitk.TranslationTransform(3, (500.0, 0.0, 0.0))      # the moving image lands outside
    agreement = auto.contrast_agreement(fixed01, moving01, far, grid)
    assert math.isnan(agreement)
    assert auto.choose_encoder(agreement) == auto.FUSED


def test_auto_encoder_returns_mind_features_for_reversed_contrast_and_says_why():
    fixed = phantom(size=(36, 32, 24), spacing=(1.5, 1.5, 1.5))
    fixed01, moving01, affine, grid = _pair(_inverted(fixed), fixed)
    messages = []
    encoder = auto.make_auto(Settings(use_cache=False))
    f, m, info = encoder.features(fixed01, moving01, affine, grid, lambda *a: messages.append(a[2]))
    assert info["auto"]["chosen"] == "mind" and info["auto"]["intensity_correlation"] < 0
    assert f.shape == m.shape and f.shape[0] == 12 and tuple(f.shape[1:]) == tuple(reversed(grid.size))
    assert any("different contrasts" in message for message in messages)


def test_adam_grid_nearest_two_millimetres_and_coarser_over_budget():
    small = 1000
    assert adam_grid_factor(small, 1.5) == 1
    assert adam_grid_factor(small, 1.0) == 2
    assert adam_grid_factor(small, 0.5) == 4
    assert adam_grid_factor(small, 3.0) == 1
    large = int(ADAM_VOXEL_BUDGET) + 1
    assert adam_grid_factor(large, 1.5) == 2
    assert adam_grid_factor(large, 0.5) == 4


def _field_of_view(extent_mm, spacing=(1.0, 1.0, 5.0)) -> sitk.Image:
    """A [0, 1] image whose whole box holds anatomy, ``extent_mm`` (x, y, z) wide."""
    size = [int(round(e / s)) for e, s in zip(extent_mm, spacing)]
    image = sitk.Image(size, sitk.sitkFloat32) + 0.5
    image.SetSpacing(spacing)
    return image


def test_default_spacing_keeps_the_reference_and_goes_finer_only_on_small_fields_of_view():
    assert default_spacing(_field_of_view((60, 60, 60))) == 1.0          # small: the native 1 mm
    assert default_spacing(_field_of_view((140, 140, 140))) == 1.15      # finer than 1.5 within 1.8 M voxels
    assert default_spacing(_field_of_view((160, 185, 205))) == 1.5       # brain-sized
    assert default_spacing(_field_of_view((155, 215, 320))) == 1.5      # thorax: 1.5 mm up to 3.5 M voxels
    assert default_spacing(_field_of_view((400, 400, 400))) == 2.63     # large: coarser to stay within 3.5 M
    coarse = _field_of_view((200, 200, 100), spacing=(1.75, 1.75, 3.3))
    assert default_spacing(coarse) == 1.75                              # never finer than the fixed voxels


def test_mind_is_computed_at_half_spacing_only_on_grids_within_its_budget():
    from SAMRegistrationLib.features.mind import FINE_VOXEL_BUDGET, make_mind, mind_oversample
    brain_sized = Grid.from_image(_field_of_view((160, 185, 205))).with_spacing(1.5)
    thorax_sized = Grid.from_image(_field_of_view((155, 215, 320))).with_spacing(1.5)
    assert brain_sized.num_voxels * 8 <= FINE_VOXEL_BUDGET < thorax_sized.num_voxels * 8
    assert mind_oversample(brain_sized) == 2 and mind_oversample(thorax_sized) == 1
    fixed = phantom(size=(30, 28, 24), spacing=(2.0, 2.0, 2.0))
    fixed01, moving01, affine, grid = _pair(fixed, fixed)
    for setting, expected in (({}, 2), ({"mind_oversample": 1}, 1)):
        _, _, info = make_mind(Settings.parse({"encoder_params": setting})).features(fixed01, moving01, affine, grid, lambda *a: None)
        assert info["oversample"] == expected


def test_a_bad_mind_oversample_is_a_clear_error():
    from SAMRegistrationLib.features.mind import make_mind
    for bad in (0, 1.5, "2", True):
        with pytest.raises(InputError, match="setting 'encoder_params.mind_oversample'") as raised:
            make_mind(Settings.parse({"encoder_params": {"mind_oversample": bad}}))
        assert "\n" not in str(raised.value) and repr(bad) in str(raised.value)
