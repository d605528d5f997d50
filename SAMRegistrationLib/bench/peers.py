"""Peer registration tools, each run with its own defaults and converted to one field convention.

Every adapter returns the fixed->moving displacement field on the fixed image grid, in LPS mm,
as a SimpleITK vector image (what ``sitk.DisplacementFieldTransform`` and our pipeline use),
plus the wall time of the registration call alone and a note on how it was run.
The peers are optional benchmark extras, imported only inside their adapter.
"""
from __future__ import annotations

import importlib.metadata
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .cases import Case


@dataclass
class PeerResult:
    field: sitk.Image
    registration_s: float
    note: str = ""


def package_available(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def on_fixed_grid(field: sitk.Image, fixed: sitk.Image) -> sitk.Image:
    """The field as float64 on exactly ``fixed``'s grid (resampled linearly if the grids differ)."""
    field = sitk.Cast(field, sitk.sitkVectorFloat64)
    same = (field.GetSize() == fixed.GetSize()
            and np.allclose(field.GetSpacing(), fixed.GetSpacing(), atol=1e-5)
            and np.allclose(field.GetOrigin(), fixed.GetOrigin(), atol=1e-4)
            and np.allclose(field.GetDirection(), fixed.GetDirection(), atol=1e-6))
    if same:
        field.CopyInformation(fixed)
        return field
    return sitk.Resample(field, fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)


def transform_field(transform: sitk.Transform, fixed: sitk.Image) -> sitk.Image:
    """Dense displacement T(p) - p of a SimpleITK transform on ``fixed``'s grid."""
    converter = sitk.TransformToDisplacementFieldFilter()
    converter.SetReferenceImage(fixed)
    converter.SetOutputPixelType(sitk.sitkVectorFloat64)
    return converter.Execute(transform)


def _read(path: str) -> sitk.Image:
    return sitk.ReadImage(path, sitk.sitkFloat32)


# ----------------------------------------------------------------------------- identity
def run_identity(case: Case, workdir: Path, threads: int) -> PeerResult:
    fixed = _read(case.fixed)
    return PeerResult(transform_field(sitk.Transform(3, sitk.sitkIdentity), fixed), 0.0,
                      "no registration (the initial state)")


# ----------------------------------------------------------------------------- ANTs SyN
def run_ants_syn(case: Case, workdir: Path, threads: int) -> PeerResult:
    """``ants.registration(fixed, moving, 'SyN')`` with its defaults (rigid+affine MI, then SyN)."""
    import ants

    fixed_ants, moving_ants = ants.image_read(case.fixed), ants.image_read(case.moving)
    start = time.perf_counter()
    reg = ants.registration(fixed=fixed_ants, moving=moving_ants, type_of_transform="SyN",
                            outprefix=str(workdir / "ants_"))
    seconds = time.perf_counter() - start
    # ANTs composes its own transform list (warp then affine, as used to warp the moving image)
    # into one displacement field on the fixed grid: no hand-made composition to get wrong.
    composed = ants.apply_transforms(fixed=fixed_ants, moving=moving_ants,
                                     transformlist=reg["fwdtransforms"], compose=str(workdir / "ants_composed_"))
    field = sitk.ReadImage(str(composed), sitk.sitkVectorFloat64)
    return PeerResult(on_fixed_grid(field, _read(case.fixed)), seconds,
                      "antspyx defaults: type_of_transform='SyN' (its own rigid+affine first)")


# ----------------------------------------------------------------------------- Elastix
def _elastix_parameters(maps: tuple[str, ...], threads: int):
    import itk

    parameters = itk.ParameterObject.New()
    for name in maps:
        parameter_map = parameters.GetDefaultParameterMap(name)
        parameter_map["MaximumNumberOfThreads"] = [str(threads)]
        parameters.AddParameterMap(parameter_map)
    return parameters


def elastix_field(fixed_path: str, moving_path: str, maps: tuple[str, ...], threads: int) -> tuple[sitk.Image, float]:
    """Run elastix with default parameter maps; return (transformix deformation field, seconds)."""
    import itk

    fixed = itk.imread(fixed_path, itk.F)
    moving = itk.imread(moving_path, itk.F)
    parameters = _elastix_parameters(maps, threads)
    start = time.perf_counter()
    _, transform_parameters = itk.elastix_registration_method(fixed, moving, parameter_object=parameters,
                                                              log_to_console=False)
    seconds = time.perf_counter() - start
    deformation = itk.transformix_deformation_field(moving, transform_parameters)
    array = np.asarray(itk.array_from_image(deformation), dtype=np.float64)   # (z, y, x, 3), x/y/z LPS mm
    field = sitk.GetImageFromArray(array, isVector=True)
    field.SetSpacing(tuple(float(v) for v in deformation.GetSpacing()))
    field.SetOrigin(tuple(float(v) for v in deformation.GetOrigin()))
    field.SetDirection(tuple(float(v) for v in np.asarray(deformation.GetDirection()).ravel()))
    return field, seconds


def run_elastix(case: Case, workdir: Path, threads: int) -> PeerResult:
    """itk-elastix with the default 'affine' then 'bspline' parameter maps."""
    field, seconds = elastix_field(case.fixed, case.moving, ("affine", "bspline"), threads)
    return PeerResult(on_fixed_grid(field, _read(case.fixed)), seconds,
                      "itk-elastix default parameter maps: affine then bspline")


# ----------------------------------------------------------------------------- ConvexAdam-MIND
ANISOTROPY_LIMIT = 3.0


def run_convexadam_mind(case: Case, workdir: Path, threads: int) -> PeerResult:
    """convexAdam's ``convex_adam_pt`` (MIND-SSC) with its defaults, on arrays of one common grid.

    The package works on voxel arrays of equal shape, so the moving image is resampled onto the
    fixed grid first (through elastix's default affine where the case needs one); grids with
    slices over 3x thicker than the pixels are made isotropic, since its defaults fail on them.
    Its voxel displacement (channel k = array axis k) is converted to world mm and composed.
    """
    import torch
    from convexAdam.convex_adam_MIND import convex_adam_pt

    fixed, moving = _read(case.fixed), _read(case.moving)
    notes = ["convexAdam defaults (MIND-SSC, fp32 on CPU)"]
    start = time.perf_counter()
    pre: sitk.Transform = sitk.Transform(3, sitk.sitkIdentity)
    if case.needs_affine:
        affine_field, _ = elastix_field(case.fixed, case.moving, ("affine",), threads)
        pre = sitk.DisplacementFieldTransform(on_fixed_grid(affine_field, fixed))
        notes.append("affine given: elastix default affine (time included)")
    reference = fixed
    spacing = np.asarray(fixed.GetSpacing())
    if spacing.max() > ANISOTROPY_LIMIT * spacing.min():
        iso = float(spacing.min())
        size = [int(round(n * s / iso)) for n, s in zip(fixed.GetSize(), spacing)]
        reference = sitk.Resample(fixed, size, sitk.Transform(), sitk.sitkLinear, fixed.GetOrigin(),
                                  [iso] * 3, fixed.GetDirection(), 0.0, sitk.sitkFloat32)
        notes.append(f"resampled to {iso:.3g} mm isotropic (defaults fail on thick slices)")
    background = float(sitk.GetArrayViewFromImage(moving).min())
    moving_on_ref = sitk.Resample(moving, reference, pre, sitk.sitkLinear, background, sitk.sitkFloat32)
    disp = convex_adam_pt(sitk.GetArrayFromImage(reference), sitk.GetArrayFromImage(moving_on_ref),
                          dtype=torch.float32, device=torch.device("cpu"))
    seconds = time.perf_counter() - start
    voxels_xyz = np.asarray(disp, dtype=np.float64)[..., ::-1]          # (z,y,x,3): (dz,dy,dx) -> (dx,dy,dz)
    matrix = np.asarray(reference.GetDirection()).reshape(3, 3) @ np.diag(reference.GetSpacing())
    world = voxels_xyz @ matrix.T
    field = sitk.GetImageFromArray(world, isVector=True)
    field.CopyInformation(reference)
    field = on_fixed_grid(field, fixed)
    # total map: p -> pre(p + u(p)); sitk composite applies its last transform first.
    total = sitk.CompositeTransform([pre, sitk.DisplacementFieldTransform(sitk.Image(field))])
    return PeerResult(transform_field(total, fixed), seconds, "; ".join(notes))


PEERS = {
    "identity": ("baseline", run_identity, None),
    "ants-syn": ("peer", run_ants_syn, "antspyx"),
    "elastix": ("peer", run_elastix, "itk-elastix"),
    "convexadam-mind": ("peer", run_convexadam_mind, "convexadam"),
}
PEER_LABELS = {"identity": "identity (initial)", "ants-syn": "ANTs SyN", "elastix": "Elastix affine+B-spline",
               "convexadam-mind": "ConvexAdam-MIND"}
