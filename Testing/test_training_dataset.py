"""The training dataset file: parsing, one-line errors naming the file and the field, data hash."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from SAMRegistrationLib.errors import InputError
from SAMRegistrationLib.training.dataset import data_hash, load_dataset
from training_data import write_dataset


def test_a_valid_dataset_is_parsed_with_paths_relative_to_its_folder(tmp_path):
    path = write_dataset(tmp_path / "data")
    document = json.loads(path.read_text())
    document["volumes"][1]["image"] = str((tmp_path / "data" / "volume1.nii.gz").absolute())   # absolute path
    path.write_text(json.dumps(document))
    dataset = load_dataset(path)
    spec = dataset.spec
    assert (spec.name, len(spec.volumes), len(spec.label_maps), len(spec.pairs), len(spec.validation)) == \
        ("blobs", 2, 1, 1, 1)
    assert spec.labels == [1, 2, 3]
    assert spec.pairs[0].fixed_landmarks == "pair0_fixed.csv"
    files = dict(dataset.files())
    assert files["label_maps[0].label"] == tmp_path / "data" / "maps" / "map0.nii.gz"
    assert files["volumes[1].image"] == tmp_path / "data" / "volume1.nii.gz"
    assert files["validation[0].moving_landmarks"] == tmp_path / "data" / "val0_moving.csv"
    assert len(files) == 2 * 2 + 1 + 6 + 6


def _rewrite(path: Path, change) -> Path:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["volumes"][1].update(image="gone.nii.gz"), "dataset.json: volumes[1].image: no such file gone.nii.gz"),
    (lambda d: d["pairs"][0].update(fixd="x"), "dataset.json: pairs[0].fixd: unknown key; known: fixed, "),
    (lambda d: d.update(extra=1), "dataset.json: extra: unknown key; known: label_maps, labels, name, pairs,"),
    (lambda d: d["volumes"][0].pop("image"), "dataset.json: volumes[0].image: missing"),
    (lambda d: d.update(labels=[1, "two"]), "dataset.json: labels[1]: "),
    (lambda d: d.update(labels=[0]), "dataset.json: labels[0]: "),
    (lambda d: d["volumes"].__setitem__(0, 5), "dataset.json: volumes[0]: "),
    (lambda d: d["validation"][0].pop("moving_label"),
     "dataset.json: validation[0]: fixed_label and moving_label come together"),
    (lambda d: [d.pop(k) for k in ("volumes", "label_maps", "pairs")],
     "dataset.json: needs at least one of volumes, label_maps or pairs"),
    (lambda d: d.pop("name"), "dataset.json: name: missing"),
])
def test_each_bad_input_is_one_line_naming_file_and_field(tmp_path, change, expected):
    path = _rewrite(write_dataset(tmp_path, label_maps=1, volumes=2), change)
    with pytest.raises(InputError) as error:
        load_dataset(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / expected.split(":")[0])), message
    assert expected.split(": ", 1)[1] in message, message


@pytest.mark.parametrize("text, expected", [
    ("{\"name\": \"x\", ", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
])
def test_bad_json_is_one_line(tmp_path, text, expected):
    path = tmp_path / "dataset.json"
    path.write_text(text)
    with pytest.raises(InputError, match=expected) as error:
        load_dataset(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    with pytest.raises(InputError, match="no such dataset file"):
        load_dataset(tmp_path / "missing.json")


def test_data_hash_follows_file_content_and_entries_not_the_name(tmp_path):
    path = write_dataset(tmp_path, volumes=2, label_maps=1, pairs=0, validation=0)
    first = data_hash(load_dataset(path))
    assert first == data_hash(load_dataset(path))
    _rewrite(path, lambda d: d.update(name="renamed"))
    assert data_hash(load_dataset(path)) == first
    volume = tmp_path / "volume1.nii.gz"
    original = volume.read_bytes()
    (tmp_path / "copy.nii.gz").write_bytes(original[:-8] + bytes(8))   # same size, other content
    volume.unlink()
    (tmp_path / "copy.nii.gz").rename(volume)
    changed = data_hash(load_dataset(path))
    assert changed != first
    volume.write_bytes(original)
    assert data_hash(load_dataset(path)) == first
    _rewrite(path, lambda d: d["volumes"].reverse())        # the same files in another order
    assert data_hash(load_dataset(path)) != first
