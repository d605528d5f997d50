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


def elastix_field(fixed_path: str, moving_path: str, maps: tuple[str, ...], threads: int,
                  workdir: Path) -> tuple[sitk.Image, float]:
    """Run elastix with default parameter maps; return (transformix deformation field, seconds).
    Transformix writes its ``deformationField.nii`` into ``workdir`` (by default it would land in
    whatever the caller's working directory is)."""
    import itk

    workdir.mkdir(parents=True, exist_ok=True)

    fixed = itk.imread(fixed_path, itk.F)
    moving = itk.imread(moving_path, itk.F)
    parameters = _elastix_parameters(maps, threads)
    start = time.perf_counter()
    _, transform_parameters = itk.elastix_registration_method(fixed, moving, parameter_object=parameters,
                                                              log_to_console=False)
    seconds = time.perf_counter() - start
    deformation = itk.transformix_deformation_field(moving, transform_parameters,
                                                    output_directory=str(workdir.absolute()))
    array = np.asarray(itk.array_from_image(deformation), dtype=np.float64)   # (z, y, x, 3), x/y/z LPS mm
    field = sitk.GetImageFromArray(array, isVector=True)
    field.SetSpacing(tuple(float(v) for v in deformation.GetSpacing()))
    field.SetOrigin(tuple(float(v) for v in deformation.GetOrigin()))
    field.SetDirection(tuple(float(v) for v in np.asarray(deformation.GetDirection()).ravel()))
    return field, seconds


def run_elastix(case: Case, workdir: Path, threads: int) -> PeerResult:
    """itk-elastix with the default 'affine' then 'bspline' parameter maps."""
    field, seconds = elastix_field(case.fixed, case.moving, ("affine", "bspline"), threads, workdir)
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
        affine_field, _ = elastix_field(case.fixed, case.moving, ("affine",), threads, workdir)
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


# ----------------------------------------------------------------------------- FireANTs
# Its quickstart's schedule (docs "Quickstart", tutorials/tutorial1_basic_usage.py): affine at
# scales 4,2,1 for 200/100/50 Adam steps (lr 3e-3), then greedy compositive deformable
# registration at 4,2,1 for 200/100/25 steps (lr 0.5, smooth_grad_sigma 1), both with local CC
# (kernel 5); the affine starts from its first-order moments (centre of mass) initialisation.
FIREANTS_AFFINE = {"scales": [4, 2, 1], "iterations": [200, 100, 50], "optimizer": "Adam",
                   "optimizer_lr": 3e-3, "cc_kernel_size": 5}
FIREANTS_GREEDY = {"scales": [4, 2, 1], "iterations": [200, 100, 25], "optimizer": "Adam",
                   "optimizer_lr": 0.5, "cc_kernel_size": 5, "deformation_type": "compositive",
                   "smooth_grad_sigma": 1.0}


def _unit_range(image: sitk.Image) -> sitk.Image:
    """Intensities scaled to [0, 1]: moment matching weighs voxels by intensity (CT is negative)."""
    return sitk.RescaleIntensity(image, 0.0, 1.0)


def fireants_field(fixed: sitk.Image, moving: sitk.Image, threads: int,
                   affine_options: dict | None = None, greedy_options: dict | None = None) -> tuple[sitk.Image, float]:
    """FireANTs moments -> affine -> greedy on the CPU; returns (fixed->moving field, seconds).

    ``get_warped_coordinates`` gives, for every fixed voxel, the point it samples in the moving
    image in the moving image's normalised [-1, 1] grid coordinates (x, y, z order, align_corners
    convention); the moving image's ``torch2phy`` matrix maps them to LPS mm, and subtracting the
    fixed voxel's own physical point gives our displacement.
    """
    import torch
    from fireants.io.image import BatchedImages, Image
    from fireants.registration.affine import AffineRegistration
    from fireants.registration.greedy import GreedyRegistration
    from fireants.registration.moments import MomentsRegistration

    torch.set_num_threads(max(1, threads))
    device = "cpu"      # fused CUDA ops (fireants_fused_ops) are not installed; CPU tensors use torch ops
    fixed_batch = BatchedImages([Image(_unit_range(fixed), device=device)])
    moving_batch = BatchedImages([Image(_unit_range(moving), device=device)])
    start = time.perf_counter()
    moments = MomentsRegistration(1, fixed_batch, moving_batch, progress_bar=False)
    moments.optimize()
    affine = AffineRegistration(fixed_images=fixed_batch, moving_images=moving_batch, progress_bar=False,
                                init_rigid=moments.get_affine_init(), **(affine_options or FIREANTS_AFFINE))
    affine.optimize()
    greedy = GreedyRegistration(fixed_images=fixed_batch, moving_images=moving_batch, progress_bar=False,
                                init_affine=affine.get_affine_matrix().detach(), **(greedy_options or FIREANTS_GREEDY))
    greedy.optimize()
    with torch.no_grad():
        coords = greedy.get_warped_coordinates(fixed_batch, moving_batch)[0]     # (z, y, x, 3) normalised
        torch2phy = moving_batch.get_torch2phy()[0].to(coords.dtype)             # (4, 4)
        moving_mm = coords @ torch2phy[:3, :3].T + torch2phy[:3, 3]
    seconds = time.perf_counter() - start
    field = sitk.GetImageFromArray(moving_mm.double().numpy() - _physical_points(fixed), isVector=True)
    field.CopyInformation(fixed)
    return field, seconds


def _physical_points(image: sitk.Image) -> np.ndarray:
    """Every voxel's LPS point, as a numpy (z, y, x, 3) array."""
    size = image.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in size[::-1]], indexing="ij")[::-1], -1)
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    return index @ matrix.T + np.asarray(image.GetOrigin())


FIREANTS_MIN_SIZE = 32     # fireants.utils.globals.MIN_IMG_SIZE


def at_least_voxels(image: sitk.Image, minimum: int) -> sitk.Image:
    """``image`` resampled so that every axis has >= ``minimum`` voxels over the same extent (else itself)."""
    size = np.asarray(image.GetSize())
    if (size >= minimum).all():
        return image
    new_size = np.maximum(size, minimum)
    spacing = np.asarray(image.GetSpacing())
    new_spacing = spacing * size / new_size
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = np.asarray(image.GetOrigin()) + direction @ ((new_spacing - spacing) / 2.0)
    return sitk.Resample(image, [int(n) for n in new_size], sitk.Transform(), sitk.sitkLinear,
                         tuple(float(v) for v in origin), tuple(float(v) for v in new_spacing),
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def run_fireants(case: Case, workdir: Path, threads: int) -> PeerResult:
    """FireANTs (``fireants``) as its quickstart runs it: moments, affine, greedy deformable, on the CPU.

    Its multi-scale loop sizes the warp as ``max(n / scale, 32)`` voxels per axis but leaves the
    full-resolution fixed image as it is, so a grid with an axis under 32 voxels fails (1.5.0);
    such a fixed grid is resampled to 32 voxels along that axis over the same extent first.
    """
    fixed = _read(case.fixed)
    notes = ["fireants quickstart schedule: moments (centre of mass), affine 4,2,1 x 200/100/50, "
             "greedy compositive 4,2,1 x 200/100/25, CC kernel 5; CPU, fp32, no fused CUDA ops"]
    reference = at_least_voxels(fixed, FIREANTS_MIN_SIZE)
    if reference is not fixed:
        notes.append(f"fixed grid resampled to {'x'.join(map(str, reference.GetSize()))} "
                     f"(its greedy stage needs >= {FIREANTS_MIN_SIZE} voxels per axis)")
    field, seconds = fireants_field(reference, _read(case.moving), threads)
    return PeerResult(on_fixed_grid(field, fixed), seconds, "; ".join(notes))


PEERS = {
    "identity": ("baseline", run_identity, None),
    "ants-syn": ("peer", run_ants_syn, "antspyx"),
    "elastix": ("peer", run_elastix, "itk-elastix"),
    "convexadam-mind": ("peer", run_convexadam_mind, "convexadam"),
    "fireants": ("peer", run_fireants, "fireants"),
}
# how a missing peer package is installed, where it is not through the 'bench' extra
PEER_INSTALL = {"fireants": "pip install --no-deps fireants==1.5.0, as make does"}
PEER_LABELS = {"identity": "identity (initial)", "ants-syn": "ANTs SyN", "elastix": "Elastix affine+B-spline",
               "convexadam-mind": "ConvexAdam-MIND", "fireants": "FireANTs greedy"}
