"""Plug-in discovery (methods and encoders, without torch), and prompt sets in worker jobs."""
from __future__ import annotations

import json
import math

import numpy as np
import SimpleITK as sitk

import pytest

from SAMRegistrationLib import plugins
from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.prompts import parse_prompt_set
from SAMRegistrationLib.worker import load_job


def test_encoders_are_discovered_without_torch_and_their_names_read_without_importing():
    """Every encoder plug-in has a summary, a parameter class and a builder; the names the GUI
    reads from the sources equal the discovered ones; listing them imports no torch."""
    import subprocess
    import sys
    names = plugins.encoder_names()
    assert {"auto", "mind", "litemedsam", "litemedsam+mind", "sam-vit-b", "medsam-vit-b"} <= set(names)
    assert plugins.declared_encoder_names() == names
    for name, plugin in plugins.encoders().items():
        assert plugin.summary and callable(plugin.build) and plugin.channels(plugin.Params()) >= 1, name
    assert plugins.encoder_plugin("mind").channels(plugins.encoder_plugin("mind").Params()) == 12
    with pytest.raises(InputError, match="unknown encoder 'mindd'; choose one of: auto, litemedsam"):
        plugins.encoder_plugin("mindd")
    probe = subprocess.run([sys.executable, "-c", "import sys; from SAMRegistrationLib import plugins; "
                            "[p.Params() for p in plugins.encoders().values()]; "
                            "print('torch' in sys.modules, 'numpy' in sys.modules)"],
                           capture_output=True, text=True)
    assert probe.stdout.split() == ["False", "False"], probe.stderr
    probe = subprocess.run([sys.executable, "-c", "import sys, builtins; real = builtins.__import__\n"
                            "def guard(name, *a, **k):\n"
                            "    assert not name.startswith('pydantic'), name\n"
                            "    return real(name, *a, **k)\n"
                            "builtins.__import__ = guard\n"
                            "from SAMRegistrationLib import plugins; print(','.join(plugins.declared_encoder_names()))"],
                           capture_output=True, text=True)
    assert probe.stdout.strip().split(",") == names, probe.stderr


def test_each_encoder_takes_only_its_own_parameters():
    from SAMRegistrationLib.settings import Settings
    assert type(Settings(encoder="mind").encoder_params).__name__ == "MindParams"
    with pytest.raises(InputError, match="unknown setting 'encoder_params.pca_dims'; known: mind_dilation"):
        Settings.parse({"encoder": "mind", "encoder_params": {"pca_dims": 8}})
    fused = Settings.parse({"encoder_params": {"pca_dims": 8, "mind_weight": 2.0}})
    assert fused.encoder_params.pca_dims == 8 and fused.encoder_params.mind_weight == 2.0
    # switching the encoder keeps what was set (refusing what the new one lacks) and takes the
    # new encoder's defaults for the rest
    assert Settings.parse({"encoder_params": {"pca_dims": 8}}).replaced(encoder="litemedsam").encoder_params.pca_dims == 8
    with pytest.raises(InputError, match="unknown setting 'encoder_params.mind_weight'"):
        fused.replaced(encoder="litemedsam")
    assert fused.replaced(encoder="mind", encoder_params={}).encoder_params.mind_radius == 1


def test_methods_are_discovered_by_module_and_load_without_torch():
    """Every module of the methods package is a plug-in named after its method, and listing
    them (names, parameters) imports neither torch nor numpy."""
    import subprocess
    import sys
    assert plugins.method_module_names() == plugins.method_names()
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
