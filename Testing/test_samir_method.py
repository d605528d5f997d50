"""Method ``samir`` through the whole pipeline: a model file chosen with ``--model``, the network
alone (``--iterations 0``) and with instance optimisation, a missing or damaged model file as
one line with the checkpoint exit code, and the shipped model's checksum and provenance."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from phantom import interior_mask, phantom, register_cli, register_images, translated
from SAMRegistrationLib.settings import Settings


def _untrained_model(path, spacing: float = 2.0) -> None:
    """A small samir model whose last layers are zero (its field is the identity), with a random
    orthonormal projection of LiteMedSAM's 256 channels."""
    from SAMRegistrationLib.learned.samir.frozen import FrozenProjection
    from SAMRegistrationLib.learned.samir.model import SamirConfig, SamirModel
    from SAMRegistrationLib.training.checkpointing import write_model
    config = SamirConfig(dims=6, head_channels=4, width=8, levels=2, steps=4, spacing=spacing)
    basis, _ = torch.linalg.qr(torch.randn(256, 6, generator=torch.Generator().manual_seed(0)))
    model = SamirModel(config, FrozenProjection(torch.zeros(256), basis, 1.0))
    write_model({"kind": "samreg-model", "task": "samir", "model": model.state_dict(),
                 "task_config": config.to_dict(), "data_hash": ""}, path)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("samir-model") / "model.pt"
    _untrained_model(path)
    return path


def _settings(tmp_path, model_file, iterations: int) -> Settings:
    return Settings(encoder="mind", method="samir", affine=False, cache_dir=str(tmp_path / "cache"),
                    method_params={"model": str(model_file), "iterations": iterations, "lambda_reg": 0.1})


def test_the_network_alone_gives_its_own_field_and_refinement_recovers_a_shift(tmp_path, model_file):
    fixed = phantom(spacing=(2.0, 2.0, 2.0))
    shift = np.array([4.0, 0.0, 0.0])
    moving = translated(fixed, shift)
    inside = interior_mask(fixed)

    (tmp_path / "alone").mkdir()
    report, field = register_images(tmp_path / "alone", fixed, moving, _settings(tmp_path, model_file, 0))
    assert float(np.abs(sitk.GetArrayFromImage(field)).max()) < 1e-6      # an untrained network: identity
    info = report["resolved"]["method"]
    assert info["iterations"] == 0 and info["network_seconds"] >= 0.0 and info["refine_grid"] is None
    assert report["resolved"]["encoder"]["by_method"] == "samir"       # --encoder mind was not computed

    (tmp_path / "refined").mkdir()
    report, field = register_images(tmp_path / "refined", fixed, moving, _settings(tmp_path, model_file, 80))
    error = np.linalg.norm(sitk.GetArrayFromImage(field)[inside] - shift, axis=1)
    assert np.mean(error) < 1.5, f"mean endpoint error {np.mean(error):.2f} mm of a 4 mm shift"
    assert report["metrics"]["fold_percent"] == 0.0


def _cli(tmp_path, *extra: str):
    return register_cli(tmp_path, "samir", *extra)


def test_a_missing_or_damaged_model_is_one_line_and_writes_nothing(tmp_path, model_file):
    missing = _cli(tmp_path, "--model", str(tmp_path / "nowhere.pt"))
    assert missing.returncode == 2, missing.stderr
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "samir model not found" in lines[0] and "nowhere.pt" in lines[0], lines
    assert not (tmp_path / "out" / "displacement.nrrd").exists()

    damaged = tmp_path / "damaged.pt"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    bad = _cli(tmp_path, "--model", str(damaged), "--model-sha256",
               (model_file.parent / "model.sha256").read_text().split()[0])
    assert bad.returncode == 2, bad.stderr
    assert "corrupt or not the one expected" in bad.stderr and "Traceback" not in bad.stderr


def test_the_shipped_model_matches_its_checksum_and_says_what_it_was_trained_on():
    from SAMRegistrationLib.checkpoints import file_sha256
    from SAMRegistrationLib.learned.samir.inference import load_model
    from SAMRegistrationLib.methods.samir import SHIPPED_MODEL, SHIPPED_SHA256
    assert SHIPPED_MODEL.is_file(), f"the shipped samir model is missing: {SHIPPED_MODEL}"
    assert file_sha256(SHIPPED_MODEL) == SHIPPED_SHA256
    assert SHIPPED_MODEL.stat().st_size < 8_000_000
    model = load_model(SHIPPED_MODEL, SHIPPED_SHA256)
    provenance = json.loads(SHIPPED_MODEL.with_suffix(".json").read_text())
    assert provenance["sha256"] == SHIPPED_SHA256
    assert provenance["config"] == model.config.to_dict()
    assert provenance["command"].startswith("samreg train samir ")
