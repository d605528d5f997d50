"""The contract every registration method plug-in keeps (run over all of them, so a new method
is held to it by adding its module): identical images give a near-zero field, a known
translation under anisotropic spacing and an oblique direction is recovered within 1 mm,
nothing folds, and bad parameter values are refused with one line naming the parameter."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from phantom import interior_mask, oblique_direction, phantom, register_images, translated
from SAMRegistrationLib import plugins
from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.params import describe
from SAMRegistrationLib.settings import Settings

METHODS = plugins.method_names()
#: methods that need prompts decode LiteMedSAM regions first (about 30 s a run here): slow
RUNS = [pytest.param(m, marks=pytest.mark.slow) if plugins.method_plugin(m).needs_prompts else m for m in METHODS]


def _register(tmp_path, method: str, fixed: sitk.Image, moving: sitk.Image) -> tuple[dict, np.ndarray]:
    needs_prompts = plugins.method_plugin(method).needs_prompts
    settings = Settings(encoder="mind", method=method, affine=False, cache_dir=str(tmp_path / "cache"))
    report, field = register_images(tmp_path, fixed, moving, settings, auto_prompts=2 if needs_prompts else None)
    return report, sitk.GetArrayFromImage(field)


@pytest.fixture(scope="module")
def fixed() -> sitk.Image:
    return phantom(direction=oblique_direction())      # 1.6 x 1.4 x 2.5 mm voxels, rotated axes


@pytest.mark.parametrize("method", RUNS)
def test_identical_images_give_a_near_zero_field(tmp_path, fixed, method):
    report, field = _register(tmp_path, method, fixed, fixed)
    length = np.linalg.norm(field[interior_mask(fixed)], axis=1)
    assert np.median(length) < 0.3 and np.percentile(length, 95) < 1.0, (np.median(length), length.max())
    assert report["metrics"]["fold_percent"] == 0.0


@pytest.mark.parametrize("method", RUNS)
def test_a_translation_is_recovered_within_a_millimetre(tmp_path, fixed, method):
    shift = np.array([4.0, -3.0, 5.0])
    report, field = _register(tmp_path, method, fixed, translated(fixed, shift))
    error = np.linalg.norm(field[interior_mask(fixed)] - shift, axis=1)
    assert np.mean(error) < 1.0, f"{method}: mean endpoint error {np.mean(error):.2f} mm"
    assert report["metrics"]["fold_percent"] == 0.0
    assert report["settings"]["method"] == method
    assert set(report["settings"]["method_params"]) == set(plugins.method_plugin(method).Params.model_fields)


def _bad_values(method: str) -> list[tuple[dict, str]]:
    """(method_params, the setting name the error must give) for an unknown key, a wrong type
    and an out-of-range value of the method's own parameters."""
    docs = describe(plugins.method_plugin(method).Params)
    cases = [({"no_such_parameter": 1}, "method_params.no_such_parameter")]
    numeric = [d for d in docs if d.type in ("int", "float", "int or null", "float or null")]
    assert numeric, f"{method} declares no numeric parameter"
    first = numeric[0]
    cases.append(({first.name: "fifty"}, f"method_params.{first.name}"))
    bounded = [d for d in numeric if d.maximum is not None]
    if bounded:
        cases.append(({bounded[0].name: bounded[0].maximum + 1}, f"method_params.{bounded[0].name}"))
    return cases


@pytest.mark.parametrize("method", METHODS)
def test_bad_parameter_values_are_refused_with_one_line(method):
    for values, name in _bad_values(method):
        with pytest.raises(InputError) as raised:
            Settings.parse({"method": method, "method_params": values})
        message = str(raised.value)
        assert name in message and "\n" not in message, message
    known = Settings.parse({"method": method}).method_params
    assert set(type(known).model_fields) == {d.name for d in describe(type(known))}
    for doc in describe(type(known)):
        assert doc.description, f"{method}.{doc.name} has no description"
