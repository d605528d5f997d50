"""A region must be an object in its image (boundary on edges, inside standing out) before it
may drive the registration."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ellipsoid_volume
from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.prompting.distinct import distinctness, gradient_magnitude, indistinct
from SAMRegistrationLib.prompting.pairs import DistinctnessCheck
from SAMRegistrationLib.settings import PromptParams, Settings
from SAMRegistrationLib.volume import normalise_intensity

#: the default object-check bounds
BOUNDS = (PromptParams().min_edge, PromptParams().min_contrast)


@pytest.fixture(scope="module")
def image_and_blob():
    image, blob, _ = ellipsoid_volume()
    image01, _ = normalise_intensity(image, "auto")
    return sitk.GetArrayFromImage(image01), gradient_magnitude(image01), blob


def test_a_structure_is_distinct_and_a_blob_across_tissue_is_not(image_and_blob):
    intensity, gradient, blob = image_and_blob
    structure = distinctness(intensity, gradient, blob)
    assert not indistinct(structure, *BOUNDS), structure

    plain = np.zeros_like(blob)
    plain[5:11, 45:65, 12:28] = True               # textured body tissue, no structure in it
    assert not (plain & blob).any()
    assert indistinct(distinctness(intensity, gradient, plain), *BOUNDS)

    box = np.zeros_like(blob)                      # the structure and the tissue around it, as a box
    zs, ys, xs = np.nonzero(blob)
    box[zs.min():zs.max() + 1, ys.min() - 8:ys.max() + 9, xs.min() - 8:xs.max() + 9] = True
    boxed = distinctness(intensity, gradient, box)
    assert boxed["edge"] < structure["edge"] and indistinct(boxed, *BOUNDS), (boxed, structure)


def test_a_region_too_small_to_have_an_inside_is_not_distinct(image_and_blob):
    intensity, gradient, blob = image_and_blob
    speck = np.zeros_like(blob)
    speck[8, 36, 46] = True
    assert distinctness(intensity, gradient, speck) == {"edge": 0.0, "contrast": 0.0}


@pytest.mark.parametrize("value", [-1, "high", float("nan"), True])
def test_bad_distinctness_bounds_are_clear_errors(value):
    with pytest.raises(InputError, match="setting 'prompt_params.min_edge'"):
        Settings.parse({"prompt_params": {"min_edge": value}})


def test_zero_bounds_turn_the_check_off():
    check = DistinctnessCheck({}, {}, Settings.parse({"prompt_params": {"min_edge": 0.0, "min_contrast": 0.0}}))
    assert not indistinct({"edge": 0.0, "contrast": 0.0}, check.min_edge, check.min_contrast)


def test_the_figures_depend_only_on_the_region_neighbourhood(image_and_blob):
    intensity, gradient, blob = image_and_blob
    padded = [np.pad(a, 12, mode="edge") for a in (intensity, gradient)]
    assert distinctness(*padded, np.pad(blob, 12)) == distinctness(intensity, gradient, blob)
