"""Small synthetic volumes with anatomy-like structure, in non-trivial physical geometry."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter


def rotation(axis: str, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def phantom(size=(44, 40, 30), spacing=(1.6, 1.4, 2.5), direction: np.ndarray | None = None,
            origin=(-30.0, -25.0, -35.0), seed: int = 0) -> sitk.Image:
    """An ellipsoidal 'body' holding blobs of several intensities and some texture (MR-like values)."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in (nz, ny, nx)), indexing="ij")
    body = (x / 0.9) ** 2 + (y / 0.85) ** 2 + (z / 0.85) ** 2 < 1
    texture = gaussian_filter(rng.standard_normal((nz, ny, nx)), 2.0)
    texture /= np.abs(texture).max()
    array = np.where(body, 300 + 150 * texture, 0.0)
    for _ in range(7):
        c = rng.uniform(-0.5, 0.5, 3)
        r = rng.uniform(0.15, 0.3, 3)
        blob = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 < 1
        array[blob & body] = rng.uniform(500, 1000)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    d = np.eye(3) if direction is None else np.asarray(direction)
    image.SetDirection(d.ravel().tolist())
    return image


def small_reference(size=(10, 10, 10)) -> sitk.Image:
    """An empty uint8 volume with anisotropic spacing, an origin and a 90-degree in-plane turn."""
    image = sitk.Image(*size, sitk.sitkUInt8)
    image.SetSpacing((1.5, 0.8, 2.5))
    image.SetOrigin((-40.0, 10.0, 3.0))
    image.SetDirection((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    return image


def oblique_direction() -> np.ndarray:
    return rotation("z", 30) @ rotation("x", 20)


def translated(image: sitk.Image, shift_mm, reference: sitk.Image | None = None) -> sitk.Image:
    """moving(q) = image(q - shift): the fixed->moving displacement that aligns them is +shift."""
    transform = sitk.TranslationTransform(3, [-float(s) for s in shift_mm])
    return sitk.Resample(image, reference or image, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def smooth_field(reference: sitk.Image, amplitude_mm: float = 3.0, wavelength_mm: float = 60.0,
                 seed: int = 1) -> sitk.Image:
    """A smooth displacement field (vector image, LPS mm) of low-frequency sinusoids in world space."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = reference.GetSize()
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    index = np.stack([i, j, k], -1).reshape(-1, 3).astype(float)
    matrix = np.asarray(reference.GetDirection()).reshape(3, 3) * np.asarray(reference.GetSpacing())
    world = index @ matrix.T + np.asarray(reference.GetOrigin())
    comps = []
    for _ in range(3):
        wave = rng.standard_normal(3)
        wave *= 2 * np.pi / wavelength_mm / np.linalg.norm(wave)
        comps.append(amplitude_mm * np.sin(world @ wave + rng.uniform(0, 2 * np.pi)))
    field = sitk.GetImageFromArray(np.stack(comps, -1).reshape(nz, ny, nx, 3), isVector=True)
    field.CopyInformation(reference)
    return field


def warped_by(image: sitk.Image, field: sitk.Image) -> sitk.Image:
    """moving(q) = image(q + v(q)) for the displacement field v."""
    transform = sitk.DisplacementFieldTransform(sitk.Image(field))
    return sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def interior_mask(image: sitk.Image, erode_mm: float = 8.0) -> np.ndarray:
    """(z, y, x) bool: the phantom's body (> 100) eroded by ``erode_mm``, where fields are scored."""
    mask = sitk.GetImageFromArray((sitk.GetArrayFromImage(image) > 100).astype(np.uint8))
    radius = [max(1, int(erode_mm / s)) for s in image.GetSpacing()]
    return sitk.GetArrayFromImage(sitk.BinaryErode(mask, radius)).astype(bool)


def register_images(folder, fixed: sitk.Image, moving: sitk.Image, settings, **inputs) -> tuple[dict, sitk.Image]:
    """Write the pair into ``folder`` (NIfTI and NRRD), run the pipeline into ``folder/out``;
    returns the report and the written displacement field."""
    from SAMRegistrationLib.pipeline import RegistrationInputs, register
    sitk.WriteImage(fixed, str(folder / "fixed.nii.gz"))
    sitk.WriteImage(moving, str(folder / "moving.nrrd"))
    out = folder / "out"
    report = register(RegistrationInputs(folder / "fixed.nii.gz", folder / "moving.nrrd", out, **inputs), settings)
    return report, sitk.ReadImage(str(out / "displacement.nrrd"))


def register_cli(folder, method: str, *extra: str):
    """``samreg register`` as a user types it, on the phantom and a copy moved 2 mm along x,
    written into ``folder``; the output folder is ``folder/out``. Returns the CompletedProcess."""
    import subprocess
    import sys
    fixed = phantom(spacing=(2.0, 2.0, 2.0))
    sitk.WriteImage(fixed, str(folder / "f.nii.gz"))
    sitk.WriteImage(translated(fixed, (2.0, 0.0, 0.0)), str(folder / "m.nii.gz"))
    return subprocess.run([sys.executable, "-m", "SAMRegistrationLib.cli", "register", str(folder / "f.nii.gz"),
                           str(folder / "m.nii.gz"), "-o", str(folder / "out"), "--method", method, *extra],
                          capture_output=True, text=True, timeout=300)
