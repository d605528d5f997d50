"""Slice-wise foundation-model features for 3D volumes (after "Are Vision Foundation Models Ready
for Out-of-the-Box Medical Image Registration?", done in physical space).

Each volume is encoded in its *own* frame, along one of its index axes: every k-th slice
of the foreground region is resampled onto a 2D canvas whose longer physical side fills the
model's input (aspect kept, no stretching of anisotropic pixels), and embedded. The
embeddings form a 3D lattice (:class:`FeatureStack`) with its own geometry; sampling it
trilinearly at any world point interpolates between encoded slices. Because a stack depends
only on the volume and the encoder settings, it is cached on disk and reused whatever the
other image or the affine.

Both stacks are then reduced by a joint PCA fitted on their foreground tokens, sampled on
the working grid (the moving one through the affine) and scaled to a fixed total variance,
so the same optimiser settings suit every encoder.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from ..grid import Grid
from ..io_atomic import atomic_path, file_lock
from ..resample import sample_tensor, transform_points
from ..volume import content_hash

log = logging.getLogger(__name__)

FEATURE_VARIANCE = 1.0        # total variance of every encoder's output (MIND-SSC has ~1.0)
from ..volume import FOREGROUND_THRESHOLD as FOREGROUND
STACK_FORMAT = 3              # bump when the stack layout or preprocessing changes (3: checksum)
AXES = {"x": 0, "y": 1, "z": 2}


@dataclass
class FeatureStack:
    grid: Grid                  # embedding cells in physical space
    features: torch.Tensor      # (C, D, H, W) float16, tensor layout of ``grid``
    valid: torch.Tensor         # (D, H, W) bool, cells that contain anatomy

    def to_dict(self) -> dict:
        g = self.grid
        data = {"format": STACK_FORMAT, "size": list(g.size), "spacing": list(g.spacing),
                "origin": list(g.origin), "direction": list(g.direction),
                "features": self.features, "valid": self.valid}
        data["sha256"] = _checksum(data)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureStack":
        """The stack of ``to_dict``; ValueError when its checksum does not match (a damaged entry)."""
        if data.get("sha256") != _checksum(data):
            raise ValueError("checksum mismatch")
        grid = Grid(tuple(data["size"]), tuple(data["spacing"]), tuple(data["origin"]), tuple(data["direction"]))
        return cls(grid, data["features"], data["valid"])


def _checksum(data: dict) -> str:
    """SHA-256 of a stack's geometry and tensors (bit flips inside a cache file load silently)."""
    digest = hashlib.sha256(repr([data.get(k) for k in ("format", "size", "spacing", "origin", "direction")]).encode())
    for key in ("features", "valid"):
        tensor = data.get(key)
        if not isinstance(tensor, torch.Tensor):
            return ""
        digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes() if tensor.dtype != torch.bool
                      else tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- geometry
def choose_axis(image: sitk.Image, setting: str) -> int:
    """Index axis to slice along: the coarsest spacing (the acquisition axis); if isotropic,
    the axis with the fewest voxels (fewest slices to encode, largest in-plane view)."""
    if setting != "auto":
        return AXES[setting]
    spacing = np.asarray(image.GetSpacing())
    size = np.asarray(image.GetSize())
    if spacing.max() > 1.2 * spacing.min():
        return int(np.argmax(spacing))
    return int(np.argmin(size))


MAX_ENCODED_SLICES = 48   # per volume: bounds the encoder's CPU time (~0.15 s per slice in bf16, ~0.6 s in fp32, 2 cores)


def choose_step(spacing_mm: float, setting: Optional[int], slices: Optional[int] = None) -> int:
    """Encode every k-th slice. Automatic k keeps encoded slices about 4 mm apart, and no more
    than ``MAX_ENCODED_SLICES`` over the ``slices`` that hold anatomy (measured on lung, 2.5 mm
    slices: k 2 -> 3 gave TRE 1.443 -> 1.442 mm and encoding 93 -> 58 s; on the brain, 1 mm,
    k 4 -> 6 lost 0.004 Dice, so the 4 mm spacing is kept where the budget allows)."""
    if setting:
        return max(1, int(setting))
    step = max(1, int(round(4.0 / spacing_mm)))
    if slices and slices > MAX_ENCODED_SLICES:
        step = max(step, int(math.ceil((slices - 1) / (MAX_ENCODED_SLICES - 1))))
    return step


def _foreground_box(image01: sitk.Image, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    mask = sitk.GetArrayViewFromImage(image01) > FOREGROUND
    size = np.asarray(image01.GetSize())
    if not mask.any():
        return np.zeros(3, int), size
    zyx = np.argwhere(mask)
    lo = np.maximum(0, zyx.min(0)[::-1] - margin)
    hi = np.minimum(size, zyx.max(0)[::-1] + 1 + margin)
    return lo, hi


def stack_grid(image01: sitk.Image, axis: int, step: int, canvas: int, multiple: int,
               flexible: bool) -> Grid:
    """Grid of canvas pixels x encoded slices for ``image01`` sliced along index ``axis``."""
    grid = Grid.from_image(image01)
    lo, hi = _foreground_box(image01)
    n = (hi - lo).astype(int)
    spacing = np.asarray(grid.spacing)
    in_plane = [a for a in range(3) if a != axis]
    extent = n * spacing
    pixel = max(extent[in_plane]) / canvas
    size = np.zeros(3, int)
    new_spacing = np.zeros(3)
    origin_index = np.zeros(3)
    for a in in_plane:
        pixels = canvas if not flexible else int(math.ceil(extent[a] / pixel / multiple - 1e-6) * multiple)
        size[a] = max(multiple, pixels)
        new_spacing[a] = pixel
        # centre the canvas on the cropped region
        origin_index[a] = lo[a] - 0.5 + (extent[a] - (size[a] - 1) * pixel) / (2 * spacing[a])
    slices = int(n[axis])
    count = max(2, int(math.ceil((slices - 1) / step)) + 1) if slices > 1 else 1
    size[axis] = count
    new_spacing[axis] = spacing[axis] * (slices - 1) / max(count - 1, 1) if slices > 1 else spacing[axis]
    origin_index[axis] = lo[axis]
    origin = grid.index_to_world(origin_index)
    return Grid(tuple(int(s) for s in size), tuple(float(s) for s in new_spacing),
                tuple(float(o) for o in origin), grid.direction)


def _resample_stack(image01: sitk.Image, target: Grid, axis: int) -> sitk.Image:
    spacing = np.asarray(image01.GetSpacing())
    sigma = [0.0 if a == axis else max(0.0, 0.5 * (target.spacing[a] - spacing[a])) for a in range(3)]
    source = sitk.SmoothingRecursiveGaussian(image01, [max(s, 1e-3) for s in sigma]) if max(sigma) > 0.05 else image01
    return sitk.Resample(source, target.reference_image(), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def _embedding_grid(stack: Grid, axis: int, stride: int) -> Grid:
    size, spacing, origin_index = list(stack.size), list(stack.spacing), np.zeros(3)
    for a in range(3):
        if a == axis:
            continue
        size[a] = stack.size[a] // stride
        spacing[a] = stack.spacing[a] * stride
        origin_index[a] = (stride - 1) / 2.0
    return Grid(tuple(size), tuple(spacing), tuple(float(o) for o in stack.index_to_world(origin_index)), stack.direction)


# --------------------------------------------------------------------------- encoding
ZOOM_OUT = 0.8      # scale of the ``zoom-out`` view


def _zoomed_size(n: int) -> int:
    """Pixels a canvas side of ``n`` shrinks to: about ``ZOOM_OUT`` n, with an even margin on
    each side so that the content stays centred."""
    return n - 2 * int(round(n * (1 - ZOOM_OUT) / 2))


def _zoom_out(slices: torch.Tensor) -> torch.Tensor:
    """The slice shrunk to :func:`_zoomed_size` in the centre of the canvas, zeros around."""
    h, w = slices.shape[-2:]
    size = [_zoomed_size(h), _zoomed_size(w)]
    small = F.interpolate(slices, size=size, mode="bilinear", align_corners=False, antialias=True)
    return F.pad(small, [(w - size[1]) // 2] * 2 + [(h - size[0]) // 2] * 2)


def _zoom_back(embeddings: torch.Tensor, canvas: tuple[int, int]) -> torch.Tensor:
    """Embeddings of a zoomed-out canvas sampled where each original cell's content went."""
    (h, w), (cells_h, cells_w) = canvas, embeddings.shape[-2:]
    scale = [_zoomed_size(n) / n for n in (w, h)]                                   # (x, y)
    ys = torch.linspace(-1 + 1 / cells_h, 1 - 1 / cells_h, cells_h) * scale[1]
    xs = torch.linspace(-1 + 1 / cells_w, 1 - 1 / cells_w, cells_w) * scale[0]
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None].expand(len(embeddings), -1, -1, -1)
    return F.grid_sample(embeddings.float(), grid.to(embeddings.device), mode="bilinear", align_corners=False)


#: transformations of a slice canvas (canvases need not be square): name -> (on the slices,
#: undoing it on their embeddings given the canvas size); each gives another "view" of the
#: same slice through the encoder, which is not equivariant to them (PromptReg marginalises its
#: correspondences over such views). Flips and the half turn are undone exactly; the zoom by
#: bilinear sampling of the embedding cells (every original cell lies inside the zoomed view)
VIEWS = {
    "identity": (lambda x: x, lambda e, canvas: e),
    "flip-cols": (lambda x: x.flip(-1), lambda e, canvas: e.flip(-1)),
    "flip-rows": (lambda x: x.flip(-2), lambda e, canvas: e.flip(-2)),
    "rot180": (lambda x: x.flip(-2, -1), lambda e, canvas: e.flip(-2, -1)),
    "zoom-out": (_zoom_out, _zoom_back),
}


def encode_stack(image01: sitk.Image, encoder, axis: int, step: int, reporter=None,
                 fraction=(0.0, 1.0), view: str = "identity", canvas: Optional[int] = None) -> FeatureStack:
    """Embed every ``step``-th slice of ``image01`` along index ``axis``, seen through ``view``
    (the embeddings are always returned in the untransformed layout), on a canvas whose longer
    side is ``canvas`` pixels (default: the encoder's own)."""
    target = stack_grid(image01, axis, step, canvas or encoder.canvas, encoder.size_multiple, encoder.flexible_size)
    array = sitk.GetArrayFromImage(_resample_stack(image01, target, axis))     # (z, y, x)
    array_axis = 2 - axis
    slices = torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, array_axis, 0)))[:, None]  # (m, 1, r, c)
    count = slices.shape[0]
    forward, undo = VIEWS[view]
    batch = max(1, getattr(encoder, "batch_size", 2))
    outputs = []
    for start in range(0, count, batch):
        if reporter is not None:
            done = start / count
            reporter("encode", fraction[0] + (fraction[1] - fraction[0]) * done,
                     f"{encoder.name}: slice {start + 1}/{count}")
        seen = encoder.embed(forward(slices[start:start + batch]).contiguous())
        outputs.append(undo(seen, tuple(slices.shape[-2:])).to(torch.float16))
    embedded = torch.cat(outputs)                                              # (m, C, r/s, c/s)
    s = encoder.stride
    valid = F.max_pool2d((slices > FOREGROUND).float(), s, s)[:, 0] > 0       # (m, r/s, c/s)
    # back to the array layout of the embedding grid: slice axis to where it belongs
    features = torch.movedim(embedded, 0, array_axis + 1).contiguous()        # (C, D, H, W)
    valid = torch.movedim(valid, 0, array_axis).contiguous()
    return FeatureStack(_embedding_grid(target, axis, s), features, valid)


def _cache_dir(settings) -> Path:
    if settings.cache_dir:
        return Path(settings.cache_dir).expanduser()
    base = os.environ.get("SAMREG_CACHE") or Path.home() / ".cache" / "samreg"
    return Path(base) / "features"


def cached_stack(image01: sitk.Image, encoder_name: str, encoder_identity: str, axis: int, step: int,
                 settings, make) -> tuple[FeatureStack, bool]:
    """Load the stack from the feature cache, or ``make()`` it and store it. Returns (stack, hit).

    Concurrent runs (``samreg batch`` workers, two Slicer sessions) share the cache: an entry's
    lock makes the second run wait for the first one's encoding and read it, so a volume every
    pair shares (an atlas) is encoded once; entries appear by atomic rename, never torn.
    """
    if not settings.use_cache:
        return make(), False
    key = hashlib.sha256("|".join([content_hash(image01), encoder_name, encoder_identity, str(axis),
                                   str(step), str(STACK_FORMAT)]).encode()).hexdigest()[:40]
    path = _cache_dir(settings) / f"{encoder_name}-{key}.pt"
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(path.with_name(f".{path.stem}.lock")))
        except OSError as exc:      # a read-only or full cache folder: encode without it
            log.warning("could not use the feature cache %s (%s)", path.parent, exc)
            return make(), False
        if path.is_file():
            try:
                return FeatureStack.from_dict(torch.load(path, map_location="cpu", weights_only=True)), True
            except Exception as exc:  # a damaged cache entry is rebuilt (and replaced), never fatal
                log.warning("feature cache entry %s is damaged (%s: %s); encoding again", path, exc.__class__.__name__,
                            str(exc).splitlines()[0][:120] if str(exc) else "")
        stack = make()
        try:
            with atomic_path(path) as tmp:
                torch.save(stack.to_dict(), tmp)
        except OSError as exc:
            log.warning("could not write the feature cache %s (%s)", path, exc)
        return stack, False


# --------------------------------------------------------------------------- joint PCA
def joint_pca(stacks: list[FeatureStack], dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (C,) and projection (C, dims) from the foreground tokens of all stacks."""
    channels = stacks[0].features.shape[0]
    total = torch.zeros(channels, dtype=torch.float64)
    outer = torch.zeros(channels, channels, dtype=torch.float64)
    count = 0
    for stack in stacks:
        tokens = stack.features.flatten(1)[:, stack.valid.flatten()]
        if tokens.shape[1] == 0:
            tokens = stack.features.flatten(1)
        for start in range(0, tokens.shape[1], 65536):
            chunk = tokens[:, start:start + 65536].to(torch.float64)
            total += chunk.sum(1)
            outer += chunk @ chunk.T
            count += chunk.shape[1]
    mean = total / count
    covariance = outer / count - torch.outer(mean, mean)
    values, vectors = torch.linalg.eigh(covariance)
    order = torch.argsort(values, descending=True)[:dims]
    return mean.float(), vectors[:, order].float()


def project(stack: FeatureStack, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """(C, D, H, W) -> (1, dims, D, H, W) float32."""
    c = stack.features.shape[0]
    flat = stack.features.reshape(c, -1)
    out = torch.empty(basis.shape[1], flat.shape[1])
    for start in range(0, flat.shape[1], 65536):
        out[:, start:start + 65536] = basis.T @ (flat[:, start:start + 65536].float() - mean[:, None])
    return out.view(1, basis.shape[1], *stack.features.shape[1:])


def scale_to_variance(fixed: torch.Tensor, moving: torch.Tensor, fixed_valid: torch.Tensor,
                      moving_valid: torch.Tensor, target: float = FEATURE_VARIANCE):
    """Scale both (C, ...) feature volumes by one factor so their foreground total variance is ``target``."""
    parts = [f.flatten(1)[:, v.flatten()] for f, v in ((fixed, fixed_valid), (moving, moving_valid)) if v.any()]
    tokens = torch.cat(parts, dim=1) if parts else torch.cat([fixed.flatten(1), moving.flatten(1)], 1)
    variance = tokens.var(dim=1).sum().clamp_min(1e-12)
    factor = math.sqrt(target / float(variance))
    return fixed * factor, moving * factor


# --------------------------------------------------------------------------- volume encoder
class SliceWiseEncoder:
    """Volume features from a registered 2D slice encoder (``litemedsam``, ``sam-vit-b``, ...)."""

    def __init__(self, name: str, settings, load_model, params=None) -> None:
        self.name = name
        self.settings = settings
        self.params = params if params is not None else settings.encoder_params   # a SliceParams
        self._load_model = load_model     # settings -> SliceEncoder, called on first use
        self._model = None

    def model(self):
        if self._model is None:
            self._model = self._load_model(self.settings)
        return self._model

    def precision(self) -> str:
        """The model's numeric route, resolved without loading it (a cache hit needs no model)."""
        requested = getattr(self.params, "precision", None)
        if requested is None:
            return "fp32"
        from ..device import resolve_device
        from .litemedsam import resolve_precision
        return resolve_precision(requested, resolve_device(getattr(self.settings, "device", "auto")))

    def canvas(self) -> Optional[int]:
        """The canvas the parameters ask for (none: the model's own)."""
        return getattr(self.params, "canvas", None)

    def identity(self) -> str:
        """What besides the image and the slicing decides the embeddings: checkpoint, route, canvas."""
        checkpoint = self.settings.checkpoint or "default"
        route, canvas = self.precision(), self.canvas()
        return checkpoint + ("" if route == "fp32" else f"|{route}") + ("" if canvas is None else f"|canvas{canvas}")

    def stack(self, image01: sitk.Image, reporter, fraction, view: str = "identity") -> tuple[FeatureStack, dict]:
        axis = choose_axis(image01, self.params.slice_axis)
        lo, hi = _foreground_box(image01)
        step = choose_step(image01.GetSpacing()[axis], self.params.slice_step, int(hi[axis] - lo[axis]))

        def make():
            return encode_stack(image01, self.model(), axis, step, reporter, fraction, view, self.canvas())

        identity = self.identity() + ("" if view == "identity" else f"|{view}")
        stack, hit = cached_stack(image01, self.name, identity, axis, step, self.settings, make)
        info = {"axis": "xyz"[axis], "slice_step": step, "encoded_slices": stack.grid.size[axis],
                "precision": self.precision(), "canvas": self.canvas(),
                "embedding_grid": list(stack.grid.size), "cache_hit": hit}
        return stack, info

    def features(self, fixed01, moving01, affine, grid: Grid, reporter) -> tuple[torch.Tensor, torch.Tensor, dict]:
        fixed_stack, fixed_info = self.stack(fixed01, reporter, (0.0, 0.45))
        moving_stack, moving_info = self.stack(moving01, reporter, (0.45, 0.9))
        reporter("encode", 0.9, "joint PCA")
        dims = int(self.params.pca_dims)
        mean, basis = joint_pca([fixed_stack, moving_stack], dims)
        points = grid.world_points()
        fixed = sample_tensor(project(fixed_stack, mean, basis), fixed_stack.grid, points)[0]
        moving_points = transform_points(points.to(torch.float64), affine).to(torch.float32)
        moving = sample_tensor(project(moving_stack, mean, basis), moving_stack.grid, moving_points)[0]
        fixed_valid = sample_tensor(fixed_stack.valid[None, None].float(), fixed_stack.grid, points)[0, 0] > 0.5
        moving_valid = sample_tensor(moving_stack.valid[None, None].float(), moving_stack.grid, moving_points)[0, 0] > 0.5
        fixed, moving = scale_to_variance(fixed, moving, fixed_valid, moving_valid)
        reporter("encode", 1.0, f"{self.name} features ready")
        return fixed, moving, {"fixed": fixed_info, "moving": moving_info, "pca_dims": dims}

