"""The registry's torch-free name lists, method plug-in discovery, and prompt sets in worker jobs."""
from __future__ import annotations

import json
import math

import numpy as np
import SimpleITK as sitk

import pytest

from SAMRegistrationLib import registry
from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.prompts import parse_prompt_set
from SAMRegistrationLib.worker import load_job


def test_builtin_name_lists_match_the_registries():
    assert sorted(registry.BUILTIN_ENCODER_NAMES) == registry.encoder_names()


def test_methods_are_discovered_by_module_and_load_without_torch():
    """Every module of the methods package is a plug-in named after its method, and listing
    them (names, parameters) imports neither torch nor numpy."""
    import subprocess
    import sys
    from SAMRegistrationLib import plugins
    assert plugins.method_module_names() == plugins.method_names() == registry.method_names()
    assert {"convexadam", "promptreg"} <= set(plugins.method_names())
    for name, plugin in plugins.methods().items():
        assert plugin.run.__module__ == f"SAMRegistrationLib.methods.{name}"
        assert callable(plugin.run) and plugin.summary
    probe = subprocess.run([sys.executable, "-c", "import sys; from SAMRegistrationLib import plugins, cli; "
                            "[p.Params() for p in plugins.methods().values()]; cli.build_parser(); "
                            "print('torch' in sys.modules, 'numpy' in sys.modules)"],
                           capture_output=True, text=True)
    assert probe.stdout.split() == ["False", "False"], probe.stderr


def test_a_prompt_set_is_validated_and_normalised():
    parsed = parse_prompt_set({"moving": [{"position": [1, 2.5, -3], "label": 7},
                                          {"position": [0, 0, 0], "positive": False}]})
    assert parsed == {"fixed": [],
                      "moving": [{"position": [1.0, 2.5, -3.0], "positive": True, "label": "7"},
                                 {"position": [0.0, 0.0, 0.0], "positive": False, "label": None}]}
    assert parse_prompt_set(None) is None
    assert parse_prompt_set({"fixed": [], "moving": []}) is None


@pytest.mark.parametrize("prompts, message", [
    ([1, 2, 3], "must be an object"),
    ({"left": []}, "unknown side"),
    ({"fixed": {"position": [1, 2, 3]}}, "must be a list"),
    ({"fixed": [{"position": [1, 2]}]}, r"prompts.fixed\[0\].*three numbers"),
    ({"moving": [{"position": [1, "a", 3]}]}, "three numbers"),
    ({"moving": [{"position": [1, math.nan, 3]}]}, "not finite"),
    ({"moving": [{"position": [1, 2, 3], "positive": "yes"}]}, "true or false"),
    ({"moving": [{"position": [1, 2, 3], "size": 4}]}, "unknown field"),
])
def test_bad_prompt_sets_are_named(prompts, message):
    with pytest.raises(InputError, match=message):
        parse_prompt_set(prompts)


def test_a_job_carries_its_prompts(tmp_path, phantom_images):
    job = {"fixed": "in/fixed.nii.gz", "moving": "in/moving.nii.gz", "output_dir": "out",
           "prompts": {"moving": [{"position": [3, -4, 5], "label": "P-1"}]}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    inputs, _ = load_job(tmp_path / "job.json")
    assert inputs.prompts["moving"][0]["position"] == [3.0, -4.0, 5.0]
    job["prompts"] = {"moving": [{"position": [3, -4]}]}
    (tmp_path / "job.json").write_text(json.dumps(job))
    with pytest.raises(InputError, match="three numbers"):
        load_job(tmp_path / "job.json")


def test_automatic_prompts_spread_over_the_anatomy_and_repeat(phantom_images):
    from SAMRegistrationLib.prompting.auto import sample_prompts
    from SAMRegistrationLib.volume import normalise_intensity
    files = phantom_images
    image, _ = normalise_intensity(sitk.ReadImage(str(files["moving"])), "auto")
    points = sample_prompts(image, 4)
    assert [p["label"] for p in points] == ["auto-1", "auto-2", "auto-3", "auto-4"]
    assert points == sample_prompts(image, 4)                      # seeded: the same clicks every run
    xyz = np.array([p["position"] for p in points])
    gaps = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)[np.triu_indices(4, 1)]
    assert gaps.min() > 5.0                                         # spread, not bunched
    values = [image.EvaluateAtPhysicalPoint(tuple(p), sitk.sitkLinear) for p in xyz]
    assert min(values) > 0.02                                       # every click inside the anatomy
    empty = sitk.Image(8, 8, 8, sitk.sitkFloat32)
    with pytest.raises(InputError, match="need anatomy in the moving image"):
        sample_prompts(empty, 2)
