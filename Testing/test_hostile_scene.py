"""The hostile volumes of ``hostile_corpus.py`` that Slicer can load, given to the scene logic
as volume nodes (under slicer-core): each must raise one clear line, add no node to the
scene and leave no temporary files."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML for Python) is not installed")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package here is not slicer-core", allow_module_level=True)

from helpers import write_pair  # noqa: E402
from hostile_corpus import CASES  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SAMRegistration"))
from SlicerSAMRegistrationLib import nodes  # noqa: E402
from SlicerSAMRegistrationLib.scene_logic import RegistrationError, SceneRegistrationLogic  # noqa: E402

VOLUME_CASES = [c for c in CASES if c.id in {
    "values/empty volume", "values/constant volume", "values/all NaN", "values/partly infinite",
    "overlap/images 1 m apart", "overlap/images barely overlapping", "shape/single slice"}]


@pytest.mark.parametrize("case", VOLUME_CASES, ids=[c.id for c in VOLUME_CASES])
def test_scene_logic_refuses(case, tmp_path):
    good = write_pair(tmp_path / "in", with_segs=False)
    folder = tmp_path / "case"
    folder.mkdir()
    fixed_path, moving_path = case.build(folder, good)[:2]
    scene = slicer.vtkMRMLScene()
    volumes = []
    for path, name in ((fixed_path, "fixed"), (moving_path, "moving")):
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        nodes.readVolume(scene, str(path), node)
        volumes.append(node)
    count = scene.GetNumberOfNodes()
    logic = SceneRegistrationLogic(scene, temporaryRoot=str(tmp_path / "tmp"))
    with pytest.raises((RegistrationError, ValueError)) as caught:
        logic.register(*volumes, settings={"encoder": "mind"})
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message, message
    for word in case.words:
        if not word.endswith((".gz", ".nrrd")):          # the scene logic's temporary copies have other names
            assert word.lower() in message.lower(), (word, message)
    assert scene.GetNumberOfNodes() == count
    assert not (tmp_path / "tmp").exists() or not os.listdir(tmp_path / "tmp")
