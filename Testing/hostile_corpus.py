"""A corpus of hostile inputs for ``samreg register``, made on the fly (never stored as data).

Each :class:`Case` writes its files into a folder beside a good phantom pair and returns the
``samreg register`` arguments (without ``-o``); ``code`` is the documented exit status it must
give (2 bad input, 3 not enough memory, 0 for awkward inputs that must simply work) and
``words`` what its one error line must name. ``test_hostile_inputs.py`` runs them.
"""
from __future__ import annotations

import gzip
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from dicom_writer import GAP, SHAPE, pattern_volume, write_series
from helpers import SIZE, SPACING, head_phantom, write_image

Build = Callable[[Path, dict], list]


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    build: Build
    words: tuple = ()       # every one must appear in the error line (lower case)
    code: int = 2

    @property
    def id(self) -> str:
        return f"{self.category}/{self.name}"


# ----------------------------------------------------------------------------- NIfTI surgery
# offsets in the NIfTI-1 header
_PIXDIM, _QFORM_CODE, _SFORM_CODE, _QUATERN, _SROW = 76, 252, 254, 256, 280


def _nifti(folder: Path, array: np.ndarray | None = None) -> bytearray:
    """The bytes of an uncompressed NIfTI-1 file of the phantom (or ``array``)."""
    path = folder / "scratch.nii"
    image = sitk.GetImageFromArray(head_phantom()[0] if array is None else array)
    image.SetSpacing((SPACING,) * 3)
    sitk.WriteImage(image, str(path), False)
    raw = bytearray(path.read_bytes())
    path.unlink()
    return raw


def _put(raw: bytearray, offset: int, fmt: str, *values) -> None:
    struct.pack_into("<" + fmt, raw, offset, *values)


def _save(folder: Path, name: str, raw: bytes, compress: bool = True) -> Path:
    path = folder / name
    path.write_bytes(gzip.compress(bytes(raw)) if compress else bytes(raw))
    return path


def _nifti_with(folder: Path, name: str, edit: Callable[[bytearray], None]) -> Path:
    raw = _nifti(folder)
    edit(raw)
    return _save(folder, name, raw)


def _forms_disagree(raw: bytearray) -> None:
    _put(raw, _QFORM_CODE, "hh", 1, 1)                       # both forms claimed valid
    x = struct.unpack_from("<4f", raw, _SROW)
    _put(raw, _SROW, "4f", x[0], x[1], x[2], x[3] + 25.0)    # the sform moved by 25 mm


def _pixdim(value: float) -> Callable[[bytearray], None]:
    def edit(raw: bytearray) -> None:
        _put(raw, _QFORM_CODE, "hh", 1, 0)                    # qform only: pixdim is the spacing
        _put(raw, _PIXDIM + 4, "f", value)
    return edit


def _sform_rows(rows) -> Callable[[bytearray], None]:
    def edit(raw: bytearray) -> None:
        _put(raw, _QFORM_CODE, "hh", 0, 1)                    # sform only
        for i, row in enumerate(rows):
            _put(raw, _SROW + 16 * i, "4f", *row)
    return edit


# ----------------------------------------------------------------------------- other formats
def _nrrd(folder: Path, name: str, header: dict, data: bytes) -> Path:
    lines = ["NRRD0004"] + [f"{k}: {v}" for k, v in header.items()]
    path = folder / name
    path.write_bytes(("\n".join(lines) + "\n\n").encode() + data)
    return path


def _phantom_bytes(dtype=np.float32) -> bytes:
    return head_phantom()[0].astype(dtype).tobytes()


_NRRD_BASE = {"type": "float", "dimension": 3, "space": "left-posterior-superior",
              "sizes": " ".join(map(str, SIZE)), "endian": "little", "encoding": "raw",
              "space origin": "(0,0,0)"}


def _nrrd_dirs(directions: str) -> Build:
    def build(folder, good):
        return [good["fixed"], _nrrd(folder, "dirs.nrrd", {**_NRRD_BASE, "space directions": directions},
                                     _phantom_bytes())]
    return build


def _mha(folder: Path, name: str, header: dict, data: bytes = b"") -> Path:
    base = {"ObjectType": "Image", "NDims": 3, "BinaryData": "True", "BinaryDataByteOrderMSB": "False",
            "ElementSpacing": "2 2 2", "DimSize": " ".join(map(str, SIZE)), "ElementType": "MET_FLOAT"}
    base.update(header)
    lines = [f"{k} = {v}" for k, v in base.items()]
    if "ElementDataFile" not in header:
        lines.append("ElementDataFile = LOCAL")
    path = folder / name
    path.write_bytes(("\n".join(lines) + "\n").encode() + data)
    return path


def _image(folder: Path, name: str, array: np.ndarray, **kwargs) -> Path:
    return write_image(array, folder / name, **kwargs)


def _moved(array: np.ndarray, folder: Path, name: str, shift_mm: float) -> Path:
    origin = [-(n - 1) * SPACING / 2 + shift_mm for n in SIZE]
    return write_image(array, folder / name, origin=origin)


def _points(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _phantom_variant(transform: Callable[[np.ndarray], np.ndarray], name: str) -> Build:
    def build(folder, good):
        return [good["fixed"], _image(folder, name, transform(head_phantom(5.0)[0]))]
    return build


def _with(*extra) -> Build:
    """The good pair plus options; ``{folder}`` in an option is replaced by the case folder."""
    def build(folder, good):
        return [good["fixed"], good["moving"], *[str(e).format(folder=folder) for e in extra]]
    return build


def _seg_case(make_fixed_seg: Callable[[Path, dict], Path], *extra) -> Build:
    def build(folder, good):
        return [good["fixed"], good["moving"], "--fixed-seg", make_fixed_seg(folder, good),
                "--moving-seg", good["moving_seg"], *extra]
    return build


def _landmarks(fixed_text: str, moving_text: str | None = None, name: str = "pts.csv") -> Build:
    def build(folder, good):
        fixed = _points(folder, "fixed_" + name, fixed_text)
        moving = _points(folder, "moving_" + name, fixed_text if moving_text is None else moving_text)
        return [good["fixed"], good["moving"], "--fixed-landmarks", fixed, "--moving-landmarks", moving]
    return build


def _prompt(text: str, name: str = "clicks.json") -> Build:
    def build(folder, good):
        return [good["fixed"], good["moving"], "--moving-prompts", _points(folder, name, text)]
    return build


def _markups(points, system: str = "LPS") -> str:
    return json.dumps({"markups": [{"type": "Fiducial", "coordinateSystem": system, "controlPoints": [
        {"label": f"p{i}", "position": list(p)} for i, p in enumerate(points)]}]})


def _checkpoint(content: Callable[[Path], None], name: str = "model.pth") -> Build:
    def build(folder, good):
        path = folder / name
        content(path)
        return [good["fixed"], good["moving"], "--encoder", "sam-vit-b", "--checkpoint", path]
    return build


def _someone_elses_checkpoint(path: Path) -> None:
    torch.save({"classifier.weight": torch.zeros(3, 3)}, path)


def _truncated_checkpoint(path: Path) -> None:
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, path)
    path.write_bytes(path.read_bytes()[:20000])


def _dicom(make: Callable[[Path], None]) -> Build:
    def build(folder, good):
        series = folder / "series"
        series.mkdir()
        make(series)
        return [good["fixed"], series]
    return build


def _missing_slices(folder: Path) -> None:
    for path in write_series(folder)[4:6]:
        path.unlink()


def _tilted(folder: Path) -> None:
    write_series(folder, positions=[np.array([0.0, k * GAP * np.tan(np.radians(12)), k * GAP]) for k in range(SHAPE[0])])


def _uneven(folder: Path) -> None:
    write_series(folder, positions=[np.array([0.0, 0.0, k * GAP + (0.9 if k == 3 else 0.0)]) for k in range(SHAPE[0])])


def _two_series(folder: Path) -> None:
    write_series(folder, desc="T1", name="a")
    write_series(folder, desc="T2", uid="1.2.826.0.1.3680043.2.1125.77", name="b")


# ----------------------------------------------------------------------------- the corpus
def _phantom() -> np.ndarray:
    return head_phantom(5.0)[0]


def _partly_inf(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[5:8, 5:8, 5:8] = np.inf
    return a


def _all_nan(a: np.ndarray) -> np.ndarray:
    return np.full_like(a, np.nan)


def _int16_extremes(a: np.ndarray) -> np.ndarray:
    out = np.full(a.shape, -32768, np.int16)             # padding value at the type's minimum
    body = a > 5
    out[body] = np.clip(a[body] * 200, -32768, 32767).astype(np.int16)
    out[a > np.percentile(a, 99.5)] = 32767              # and saturated voxels at its maximum
    return out


def _uint8_full(a: np.ndarray) -> np.ndarray:
    return np.clip(a * 255 / a.max(), 0, 255).astype(np.uint8)


CASES: list[Case] = [
    # --- files and formats
    Case("format", "missing file", lambda f, g: [g["fixed"], f / "absent.nii.gz"], ("absent.nii.gz",)),
    Case("format", "empty file", lambda f, g: [g["fixed"], _points(f, "empty.nii.gz", "")], ("empty.nii.gz",)),
    Case("format", "text named .nii.gz", lambda f, g: [g["fixed"], _points(f, "notes.nii.gz", "hello")],
         ("notes.nii.gz",)),
    Case("format", "random bytes .nrrd", lambda f, g: [g["fixed"], _save(f, "noise.nrrd", np.random.default_rng(0)
                                                                          .bytes(3000), False)], ("noise.nrrd",)),
    Case("format", "truncated gzip", lambda f, g: [g["fixed"], _save(
        f, "cut.nii.gz", gzip.compress(bytes(_nifti(f)))[:4000], False)], ("cut.nii.gz",)),
    Case("format", "truncated nifti data", lambda f, g: [g["fixed"], _save(
        f, "short.nii", _nifti(f)[:20000], False)], ("short.nii",)),
    Case("format", "nifti bad header size", lambda f, g: [g["fixed"], _nifti_with(
        f, "hdr.nii.gz", lambda r: _put(r, 0, "i", 123))], ("hdr.nii.gz",)),
    Case("format", "nifti qform and sform disagree", lambda f, g: [g["fixed"], _nifti_with(
        f, "forms.nii.gz", _forms_disagree)], ("forms.nii.gz", "qform", "sform")),
    Case("format", "nifti zero spacing", lambda f, g: [g["fixed"], _nifti_with(
        f, "zero.nii.gz", _pixdim(0.0))], ("zero.nii.gz", "spacing")),
    Case("format", "nifti negative spacing", lambda f, g: [g["fixed"], _nifti_with(
        f, "neg.nii.gz", _pixdim(-2.0))], ("neg.nii.gz", "spacing")),
    Case("format", "nifti NaN spacing", lambda f, g: [g["fixed"], _nifti_with(
        f, "nanspacing.nii.gz", _pixdim(float("nan")))], ("nanspacing.nii.gz", "spacing")),
    Case("format", "nifti singular sform", lambda f, g: [g["fixed"], _nifti_with(
        f, "singular.nii.gz", _sform_rows([(2, 0, 0, 0), (0, 2, 0, 0), (0, 0, 0, 0)]))], ("singular.nii.gz",)),
    Case("format", "nifti sheared sform", lambda f, g: [g["fixed"], _nifti_with(
        f, "shear.nii.gz", _sform_rows([(2, 1.2, 0, 0), (0, 2, 0, 0), (0, 0, 2, 0)]))], ("shear.nii.gz",)),
    Case("format", "nrrd non-orthogonal directions", _nrrd_dirs("(2,0,0) (1.5,2,0) (0,0,2)"), ("dirs.nrrd",)),
    Case("format", "nrrd singular directions", _nrrd_dirs("(2,0,0) (2,0,0) (0,0,2)"), ("dirs.nrrd",)),
    Case("format", "nrrd truncated data", lambda f, g: [g["fixed"], _nrrd(
        f, "cut.nrrd", {**_NRRD_BASE, "space directions": "(2,0,0) (0,2,0) (0,0,2)"}, _phantom_bytes()[:9000])],
        ("cut.nrrd",)),
    Case("format", "nrrd unknown type", lambda f, g: [g["fixed"], _nrrd(
        f, "type.nrrd", {**_NRRD_BASE, "type": "quaternion", "space directions": "(2,0,0) (0,2,0) (0,0,2)"},
        _phantom_bytes())], ("type.nrrd",)),
    Case("format", "mhd without its raw file", lambda f, g: [g["fixed"], _mha(
        f, "lost.mhd", {"ElementDataFile": "lost.raw"})], ("lost.mhd",)),
    Case("format", "mha zero spacing", lambda f, g: [g["fixed"], _mha(
        f, "zero.mha", {"ElementSpacing": "0 0 0"}, _phantom_bytes())], ("zero.mha", "spacing")),
    Case("format", "mha short data", lambda f, g: [g["fixed"], _mha(f, "short.mha", {}, _phantom_bytes()[:5000])],
         ("short.mha",)),
    Case("format", "huge volume header", lambda f, g: [g["fixed"], _mha(
        f, "huge.mha", {"DimSize": "6000 6000 6000"}, b"\0" * 1000)], ("huge.mha", "memory"), 3),
    # --- DICOM folders
    Case("dicom", "one good series", _dicom(lambda d: write_series(d) and None), code=0),
    Case("dicom", "empty folder", _dicom(lambda d: None), ("series", "dicom")),
    Case("dicom", "folder of other files", _dicom(lambda d: (d / "readme.txt").write_text("not dicom") and None),
         ("series", "dicom")),
    Case("dicom", "several series", _dicom(_two_series), ("2 series",)),
    Case("dicom", "missing slices", _dicom(_missing_slices), ("missing",)),
    Case("dicom", "uneven slice spacing", _dicom(_uneven), ("uneven",)),
    Case("dicom", "gantry tilt", _dicom(_tilted), ("tilt",)),
    Case("dicom", "a single slice", _dicom(lambda d: write_series(d, volume=pattern_volume()[:1]) and None),
         ("single slice",)),
    # --- dimensions and voxel types
    Case("shape", "2D image", lambda f, g: [g["fixed"], _image(f, "flat.nii.gz", _phantom()[20])], ("flat.nii.gz", "2d")),
    Case("shape", "single slice", lambda f, g: [g["fixed"], _image(f, "one.nii.gz", _phantom()[20:21])],
         ("one.nii.gz", "slice")),
    Case("shape", "4D series", lambda f, g: [g["fixed"], _image(f, "series.nii.gz", np.stack([_phantom()] * 3))],
         ("series.nii.gz", "4d")),
    Case("shape", "vector image", lambda f, g: [g["fixed"], sitk.WriteImage(sitk.Compose(
        *[sitk.GetImageFromArray(_phantom())] * 3), str(f / "rgb.nrrd")) or f / "rgb.nrrd"], ("rgb.nrrd", "components")),
    Case("shape", "2D png", lambda f, g: [g["fixed"], sitk.WriteImage(sitk.Cast(sitk.GetImageFromArray(
        _uint8_full(_phantom())[20]), sitk.sitkUInt8), str(f / "slice.png")) or f / "slice.png"], ("slice.png", "2d")),
    Case("values", "empty volume", lambda f, g: [g["fixed"], _image(f, "zeros.nii.gz", np.zeros_like(_phantom()))],
         ("zeros.nii.gz", "empty")),
    Case("values", "constant volume", lambda f, g: [_image(f, "const.nii.gz", np.full_like(_phantom(), 7)),
                                                    g["moving"]], ("const.nii.gz", "constant")),
    Case("values", "all NaN", lambda f, g: [g["fixed"], _image(f, "nan.nrrd", _all_nan(_phantom()))], ("nan.nrrd", "nan")),
    Case("values", "partly infinite", lambda f, g: [g["fixed"], _image(f, "inf.nrrd", _partly_inf(_phantom()))],
         ("inf.nrrd", "infinite")),
    Case("values", "int16 extremes", _phantom_variant(_int16_extremes, "int16.nii.gz"), code=0),
    Case("values", "uint8 full range", _phantom_variant(_uint8_full, "uint8.nii.gz"), code=0),
    Case("values", "float64 huge values", _phantom_variant(lambda a: a.astype(np.float64) * 1e30, "huge.nrrd"), code=0),
    Case("values", "binary image", _phantom_variant(lambda a: (a > 50).astype(np.uint8), "mask.nii.gz"), code=0),
    # --- geometry between the images
    Case("overlap", "images 1 m apart", lambda f, g: [g["fixed"], _moved(_phantom(), f, "far.nii.gz", 1000.0)],
         ("overlap",)),
    Case("overlap", "images barely overlapping", lambda f, g: [g["fixed"], _moved(_phantom(), f, "edge.nii.gz", 76.0)],
         ("overlap", "edge.nii.gz")),
    Case("overlap", "barely overlapping, no affine", lambda f, g: [g["fixed"], _moved(_phantom(), f, "edge2.nii.gz", 76.0),
                                                                  "--no-affine"], ("overlap",)),
    # --- segmentations
    Case("segmentation", "only one label map", lambda f, g: [g["fixed"], g["moving"], "--fixed-seg", g["fixed_seg"]],
         ("moving-seg",)),
    Case("segmentation", "grid size differs", _seg_case(lambda f, g: _image(
        f, "small_seg.nii.gz", np.ones((10, 10, 10), np.uint8))), ("small_seg.nii.gz",)),
    Case("segmentation", "grid spacing differs", _seg_case(lambda f, g: _image(
        f, "spaced_seg.nii.gz", head_phantom()[1], spacing=(3.0, 3.0, 3.0))), ("spaced_seg.nii.gz", "grid")),
    Case("segmentation", "grid origin differs", _seg_case(lambda f, g: _image(
        f, "shifted_seg.nii.gz", head_phantom()[1], origin=(50.0, 0.0, 0.0))), ("shifted_seg.nii.gz", "grid")),
    Case("segmentation", "fractional labels", _seg_case(lambda f, g: _image(
        f, "prob_seg.nii.gz", head_phantom()[1].astype(np.float32) * 0.37)), ("prob_seg.nii.gz",)),
    Case("segmentation", "negative labels", _seg_case(lambda f, g: _image(
        f, "neg_seg.nii.gz", -head_phantom()[1].astype(np.int16))), ("neg_seg.nii.gz", "negative")),
    Case("segmentation", "no labels at all", _seg_case(lambda f, g: _image(
        f, "blank_seg.nii.gz", np.zeros(head_phantom()[1].shape, np.uint8))), ("blank_seg.nii.gz", "label")),
    Case("segmentation", "asked label absent", lambda f, g: [g["fixed"], g["moving"], "--fixed-seg", g["fixed_seg"],
                                                            "--moving-seg", g["moving_seg"], "--labels", "9"], ("9",)),
    Case("segmentation", "labels not numbers", lambda f, g: [g["fixed"], g["moving"], "--fixed-seg", g["fixed_seg"],
                                                            "--moving-seg", g["moving_seg"], "--labels", "a,b"],
         ("labels",)),
    # --- landmarks
    Case("landmarks", "empty file", _landmarks(""), ("fixed_pts.csv",)),
    Case("landmarks", "malformed text", _landmarks("x;y;z\nhello;world;!\n"), ("fixed_pts.csv",)),
    Case("landmarks", "different counts", _landmarks("0,0,0\n1,1,1\n", "0,0,0\n"), ("landmark",)),
    Case("landmarks", "NaN coordinate", _landmarks("0,0,nan\n1,1,1\n"), ("fixed_pts.csv",)),
    Case("landmarks", "outside the image (wrong units)", _landmarks("0,0,0\n4000,5000,3000\n"), ("outside",)),
    Case("landmarks", "only fixed ones", lambda f, g: [g["fixed"], g["moving"], "--fixed-landmarks",
                                                      _points(f, "one.csv", "0,0,0\n")], ("landmarks",)),
    Case("landmarks", "bad elastix header", _landmarks("point\nthree\n0 0 0\n", name="pts.txt"), ("fixed_pts.txt",)),
    # --- prompts
    Case("prompts", "empty file", _prompt("", "empty.json"), ("empty.json",)),
    Case("prompts", "malformed JSON", _prompt("{\"markups\": [", "broken.json"), ("broken.json",)),
    Case("prompts", "outside the image", _prompt(_markups([(900.0, 0.0, 0.0)]), "far.mrk.json"), ("outside",)),
    Case("prompts", "unknown coordinate system", _prompt(_markups([(0.0, 0.0, 0.0)], "XYZ"), "sys.mrk.json"),
         ("sys.mrk.json",)),
    Case("prompts", "position with two numbers", _prompt(json.dumps({"markups": [{"controlPoints": [
        {"position": [1, 2]}]}]}), "two.mrk.json"), ("two.mrk.json",)),
    Case("prompts", "auto prompts zero", _with("--auto-prompts", "0"), ("auto-prompts",)),
    # --- settings
    Case("settings", "spacing zero", _with("--spacing", "0"), ("spacing",)),
    Case("settings", "spacing negative", _with("--spacing", "-1.5"), ("spacing",)),
    Case("settings", "spacing NaN", _with("--spacing", "nan"), ("spacing",)),
    Case("settings", "spacing too fine for memory", _with("--spacing", "0.004"), ("memory", "--spacing"), 3),
    Case("settings", "threads zero", _with("--threads", "0"), ("threads",)),
    Case("settings", "iterations negative", _with("--method", "convexadam", "--iterations", "-5"), ("iterations",)),
    Case("settings", "unknown encoder", _with("--encoder", "sam-vit-z"), ("sam-vit-z",)),
    Case("settings", "unknown method", _with("--method", "demons"), ("demons",)),
    Case("settings", "unknown option", _with("--smoothness", "3"), ("--smoothness",)),
    Case("settings", "text for a number", _with("--pca-dims", "many"), ("pca-dims",)),
    # --- checkpoints
    Case("checkpoint", "missing", _with("--encoder", "sam-vit-b", "--checkpoint", "{folder}/gone.pth"), ("gone.pth",)),
    Case("checkpoint", "random bytes", _checkpoint(lambda p: p.write_bytes(np.random.default_rng(2).bytes(9000))),
         ("model.pth",)),
    Case("checkpoint", "truncated", _checkpoint(_truncated_checkpoint, "cut.pth"), ("cut.pth",)),
    Case("checkpoint", "someone else's model", _checkpoint(_someone_elses_checkpoint, "other.pth"), ("other.pth",)),
    Case("checkpoint", "samir model missing", _with("--method", "samir", "--model", "{folder}/none.pt"), ("none.pt",)),
]


# output locations are built by the test itself (they replace ``-o``)
def _file_in(folder: Path, name: str) -> Path:
    (folder / name).write_text("someone's notes")
    return folder / name


OUTPUT_CASES = {
    "output is a file": lambda f: _file_in(f, "taken.txt"),
    "output below a file": lambda f: _file_in(f, "plain.txt") / "out",
    "output on a read-only file system": lambda f: Path("/proc/samreg-out"),
}
