"""Training pairs drawn on the fly from a dataset, deterministic given (seed, step, index).

Every volume is resampled once onto a *training grid* (:func:`training_grid`: ``grid_size``
voxels, x,y,z, at ``grid_spacing`` mm, isotropic, or the smallest spacing that holds the whole
volume; centred on the volume, in its own axes) and kept in memory; a real pair's moving image
(and its label map) is resampled onto its fixed image's grid, through world coordinates.
Images are normalised to [0, 1] first (CT window or MR percentiles, as for registration).

A sample is one of (kind chosen with the configured weights among the kinds present, then an
entry uniformly):

* a real pair, as given (``augment_pairs``: with independent intensity changes);
* a synthetic pair from a single volume: fixed = the volume, moving = the volume warped by
  w = exp(v) for a random smooth velocity v, each then given its own intensity changes; the
  label map is warped by nearest neighbour; ``true_displacement`` = exp(-v), the
  fixed -> moving mapping (``warp(moving, true_displacement) ~ fixed``);
* with ``deformed_copies`` K > 0, a synthetic pair from a single volume is two different
  members of a bank of the volume and K deformed copies of it, each deformation drawn from a
  fixed seed and each copy encoded once (features that do not survive warping, such as a
  slice-wise foundation encoder's, are then computed on the deformed image itself, once);
* a SynthMorph pair from a label map: two images drawn from (labels, labels warped by w).

Features: with a feature provider, each volume's features are computed once
(:class:`~.feature_cache.FeatureCache`); a synthetic pair's moving features are the cached
ones warped by w (or, with ``reencode_features``, the warped volume encoded again). Features
are of the volume before intensity changes. SynthMorph images are new at every draw, so
theirs are encoded at every draw.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import InputError
from ..field_ops import warp
from ..grid import Grid
from ..landmarks import check_pairs, read_points
from ..volume import check_values, normalise_intensity, read_segmentation, read_volume
from .config import SamplingConfig
from .dataset import Dataset, PairEntry
from .feature_cache import FeatureCache, FeatureProvider, default_cache_dir, image_tensor, tensor_image, warp_features
from .synthesis import (augment_intensity, compose, integrate_velocity, random_velocity, synthmorph_image, uniform,
                        warp_nearest)


@dataclass
class TrainingPair:
    """One training or validation pair on its training grid.

    Images (1, 1, D, H, W) float32 in [0, 1]; label maps (1, 1, D, H, W) int64; points (N, 3)
    float32 continuous voxel indices (x, y, z) of the training grid, row i of fixed and moving
    corresponding; features (1, C, D', H', W'); ``true_displacement`` (1, 3, D, H, W) voxels,
    the fixed -> moving mapping (known for synthetic pairs only); ``spacing`` the grid's (x, y,
    z) mm; ``labels`` the label values to score (None: every non-zero value).
    """

    fixed: torch.Tensor
    moving: torch.Tensor
    fixed_label: Optional[torch.Tensor] = None
    moving_label: Optional[torch.Tensor] = None
    fixed_points: Optional[torch.Tensor] = None
    moving_points: Optional[torch.Tensor] = None
    fixed_features: Optional[torch.Tensor] = None
    moving_features: Optional[torch.Tensor] = None
    true_displacement: Optional[torch.Tensor] = None
    source: str = ""
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    labels: Optional[tuple[int, ...]] = None

    def to(self, device: torch.device | str) -> "TrainingPair":
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)


def training_grid(image: sitk.Image, size_xyz, spacing: Optional[float] = None) -> Grid:
    """``size_xyz`` voxels centred on ``image``, in its axes, at ``spacing`` mm (isotropic); by
    default the smallest spacing at which the grid holds the whole image (edge to edge)."""
    source = Grid.from_image(image)
    size = np.asarray(size_xyz, dtype=int)
    extent = np.asarray(source.spacing) * np.asarray(source.size)
    step = float(spacing) if spacing else float(np.max(extent / size))
    centre = source.index_to_world((np.asarray(source.size) - 1) / 2.0)
    origin = centre - source.direction_matrix @ (step * (size - 1) / 2.0)
    return Grid(tuple(int(s) for s in size), (step, step, step), tuple(float(o) for o in origin), source.direction)


def sample_seed(seed: int, step: int, index: int) -> int:
    """The generator seed of sample ``index`` of step ``step``: a hash, so neighbouring
    (seed, step, index) give unrelated streams."""
    digest = hashlib.sha256(f"samreg-train/{seed}/{step}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class PairSampler:
    """Training pairs of ``dataset``: ``sample(step, index)``; validation pairs:
    :meth:`validation_pairs`. ``feature_provider`` (optional) adds features to every pair;
    ``cache_dir`` is their on-disk cache (default: ``config.feature_cache`` or
    ``~/.cache/samreg/training-features``)."""

    def __init__(self, dataset: Dataset, config: SamplingConfig, seed: int = 0,
                 feature_provider: Optional[FeatureProvider] = None, cache_dir: Optional[Path] = None) -> None:
        self.dataset, self.config, self.seed = dataset, config, int(seed)
        folder = cache_dir or (Path(config.feature_cache).expanduser() if config.feature_cache else default_cache_dir())
        self.features = FeatureCache(feature_provider, folder) if feature_provider is not None else None
        spec = dataset.spec
        weights = {"pairs": config.pair_weight, "volumes": config.volume_weight,
                   "label_maps": config.label_map_weight}
        self.kinds = [(kind, w) for kind, w in weights.items() if getattr(spec, kind) and w > 0]
        if not self.kinds:
            present = [kind for kind in weights if getattr(spec, kind)]
            raise InputError(f"{dataset.path}: every kind of training data present ({', '.join(present)}) "
                             "has weight 0; give one of them a positive --pair-weight, --volume-weight or "
                             "--label-map-weight")
        self.labels = tuple(spec.labels) if spec.labels else None
        self._images: dict = {}
        self._labels: dict = {}
        self._synth_maps: dict = {}
        self._landmarks: dict = {}
        self._copies: dict = {}
        self._validation: Optional[list[TrainingPair]] = None

    # ----------------------------------------------------------------- loading (once per volume)
    def _image(self, where: str, value: str, grid: Optional[Grid] = None) -> sitk.Image:
        """The image of field ``where`` normalised to [0, 1] on ``grid`` (default: its own training grid)."""
        path = self.dataset.resolve(value)
        key = (str(path), grid)
        if key not in self._images:
            try:
                image = read_volume(path, "image")
                check_values(image, "image", path)
                image01, _ = normalise_intensity(image, "auto")
            except InputError as exc:
                raise self.dataset.error(where, str(exc)) from None
            onto_other = grid is not None
            if grid is None:
                grid = training_grid(image01, self.config.grid_size, self.config.grid_spacing)
            resampled = sitk.Resample(image01, grid.reference_image(), sitk.Transform(), sitk.sitkLinear,
                                      0.0, sitk.sitkFloat32)
            if onto_other and not (sitk.GetArrayViewFromImage(resampled) > 0).any():
                raise self.dataset.error(where, f"{value} does not overlap the fixed image (the pair must share "
                                                "one world frame)")
            self._images[key] = resampled
        return self._images[key]

    def _read_labels(self, where: str, value: str) -> sitk.Image:
        try:
            return read_segmentation(self.dataset.resolve(value), "label map")
        except InputError as exc:
            raise self.dataset.error(where, str(exc)) from None

    @staticmethod
    def _on_grid(labels: sitk.Image, grid: Grid) -> torch.Tensor:
        resampled = sitk.Resample(labels, grid.reference_image(), sitk.Transform(), sitk.sitkNearestNeighbor,
                                  0, sitk.sitkInt32)
        return torch.from_numpy(sitk.GetArrayFromImage(resampled).astype(np.int64))[None, None]

    def _label(self, where: str, value: Optional[str], grid: Grid) -> Optional[torch.Tensor]:
        """The label map of field ``where`` on ``grid`` (nearest neighbour), or None."""
        if value is None:
            return None
        key = (str(self.dataset.resolve(value)), grid)
        if key not in self._labels:
            self._labels[key] = self._on_grid(self._read_labels(where, value), grid)
        return self._labels[key]

    def _label_map(self, index: int) -> tuple[torch.Tensor, Grid]:
        """Label map ``index`` on its own training grid."""
        if index not in self._synth_maps:
            labels = self._read_labels(f"label_maps[{index}].label", self.dataset.spec.label_maps[index].label)
            grid = training_grid(labels, self.config.grid_size, self.config.grid_spacing)
            self._synth_maps[index] = (self._on_grid(labels, grid), grid)
        return self._synth_maps[index]

    def _points(self, where: str, entry: PairEntry, grid: Grid) -> tuple[Optional[torch.Tensor], ...]:
        """Fixed and moving landmarks as training-grid voxel indices (x, y, z), or (None, None)."""
        if entry.fixed_landmarks is None:
            return None, None
        if where in self._landmarks:
            return self._landmarks[where]
        points = []
        for side in ("fixed", "moving"):
            try:
                world = read_points(self.dataset.resolve(getattr(entry, f"{side}_landmarks")))
            except InputError as exc:
                raise self.dataset.error(f"{where}.{side}_landmarks", str(exc)) from None
            points.append(world)
        try:
            check_pairs(*points)
        except InputError as exc:
            raise self.dataset.error(f"{where}.moving_landmarks", str(exc)) from None
        self._landmarks[where] = tuple(torch.from_numpy(grid.world_to_index(p).astype(np.float32)) for p in points)
        return self._landmarks[where]

    # ----------------------------------------------------------------- pairs
    def _features(self, image: sitk.Image) -> Optional[torch.Tensor]:
        return None if self.features is None else self.features.get(image)[None]

    def _encode(self, tensor: torch.Tensor, like: sitk.Image) -> Optional[torch.Tensor]:
        """Features of a one-off image (not cached: it is never seen again)."""
        if self.features is None:
            return None
        return self.features.provider(tensor_image(tensor, like)).detach().cpu().float()[None]

    def _real_pair(self, kind: str, index: int, generator: Optional[torch.Generator]) -> TrainingPair:
        entry = getattr(self.dataset.spec, kind)[index]
        where = f"{kind}[{index}]"
        fixed_image = self._image(f"{where}.fixed", entry.fixed)
        grid = Grid.from_image(fixed_image)
        moving_image = self._image(f"{where}.moving", entry.moving, grid)
        fixed, moving = image_tensor(fixed_image), image_tensor(moving_image)
        if generator is not None and self.config.augment_pairs:
            fixed, moving = self._augment(fixed, generator), self._augment(moving, generator)
        fixed_points, moving_points = self._points(where, entry, grid)
        return TrainingPair(fixed, moving, self._label(f"{where}.fixed_label", entry.fixed_label, grid),
                            self._label(f"{where}.moving_label", entry.moving_label, grid),
                            fixed_points, moving_points, self._features(fixed_image), self._features(moving_image),
                            None, where, grid.spacing, self.labels)

    def _augment(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        c = self.config
        return augment_intensity(image, generator, c.gamma, c.bias, c.noise)

    def _deformation(self, shape, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, its inverse): exp(v) and exp(-v) for a random velocity v."""
        c = self.config
        velocity = random_velocity(shape, generator, uniform(generator, 0.0, c.deform_voxels), c.deform_smoothness)
        return integrate_velocity(velocity, c.integration_steps), integrate_velocity(-velocity, c.integration_steps)

    def _copy(self, index: int, number: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                       Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Deformed copy ``number`` of volume ``index`` (0: the volume itself), made once:
        (image, w, its inverse, label map, features); the same for the same seed."""
        key = (index, number)
        if key not in self._copies:
            entry, where = self.dataset.spec.volumes[index], f"volumes[{index}]"
            base_image = self._image(f"{where}.image", entry.image)
            base = image_tensor(base_image)
            label = self._label(f"{where}.label", entry.label, Grid.from_image(base_image))
            if number == 0:
                forward = inverse = torch.zeros(1, 3, *base.shape[-3:])
                image, copy_image = base, base_image
            else:
                seed = sample_seed(self.seed, -1 - index, number)      # negative steps: never a sample's
                forward, inverse = self._deformation(base.shape[-3:], torch.Generator().manual_seed(seed))
                image = warp(base, forward)
                copy_image = tensor_image(image, base_image)
            moved_label = None if label is None else (label if number == 0 else warp_nearest(label, forward))
            self._copies[key] = (image, forward, inverse, moved_label, self._features(copy_image))
        return self._copies[key]

    def _copies_pair(self, index: int, generator: torch.Generator) -> TrainingPair:
        """Two different copies of volume ``index`` (:meth:`_copy`): fixed a, moving b. With
        fixed(x) = V(x + w_a(x)) and moving(y) = V(y + w_b(y)), the fixed -> moving mapping is
        w_a followed by w_b's inverse."""
        count = self.config.deformed_copies + 1
        a = int(torch.randint(count, (), generator=generator))
        b = (a + 1 + int(torch.randint(count - 1, (), generator=generator))) % count
        fixed, forward_a, _, fixed_label, fixed_features = self._copy(index, a)
        moving, _, inverse_b, moving_label, moving_features = self._copy(index, b)
        grid = Grid.from_image(self._image(f"volumes[{index}].image", self.dataset.spec.volumes[index].image))
        return TrainingPair(self._augment(fixed, generator), self._augment(moving, generator), fixed_label,
                            moving_label, None, None, fixed_features, moving_features, compose(forward_a, inverse_b),
                            f"volumes[{index}] copies {a}-{b}", grid.spacing, self.labels)

    def _volume_pair(self, index: int, generator: torch.Generator) -> TrainingPair:
        if self.config.deformed_copies > 0:
            return self._copies_pair(index, generator)
        entry = self.dataset.spec.volumes[index]
        where = f"volumes[{index}]"
        base_image = self._image(f"{where}.image", entry.image)
        grid = Grid.from_image(base_image)
        base = image_tensor(base_image)
        forward, inverse = self._deformation(base.shape[-3:], generator)
        moved = warp(base, forward)
        fixed, moving = self._augment(base, generator), self._augment(moved, generator)
        label = self._label(f"{where}.label", entry.label, grid)
        fixed_features = self._features(base_image)
        if fixed_features is None:
            moving_features = None
        elif self.config.reencode_features:
            moving_features = self._encode(moved, base_image)
        else:
            moving_features = warp_features(fixed_features[0], forward)
        return TrainingPair(fixed, moving, label, None if label is None else warp_nearest(label, forward),
                            None, None, fixed_features, moving_features, inverse, f"{where} synthetic",
                            grid.spacing, self.labels)

    def _label_map_pair(self, index: int, generator: torch.Generator) -> TrainingPair:
        labels, grid = self._label_map(index)
        forward, inverse = self._deformation(labels.shape[-3:], generator)
        moved_labels = warp_nearest(labels, forward)
        c = self.config
        fixed = synthmorph_image(labels, generator, c.blur, c.bias, c.noise, c.gamma)
        moving = synthmorph_image(moved_labels, generator, c.blur, c.bias, c.noise, c.gamma)
        like = grid.reference_image(sitk.sitkFloat32)
        return TrainingPair(fixed, moving, labels, moved_labels, None, None, self._encode(fixed, like),
                            self._encode(moving, like), inverse, f"label_maps[{index}] synthmorph",
                            grid.spacing, self.labels)

    def sample(self, step: int, index: int) -> TrainingPair:
        """Sample ``index`` of step ``step``: the same pair for the same (seed, step, index)."""
        generator = torch.Generator().manual_seed(sample_seed(self.seed, step, index))
        weights = torch.tensor([w for _, w in self.kinds], dtype=torch.float64)
        kind = self.kinds[int(torch.multinomial(weights, 1, generator=generator))][0]
        count = len(getattr(self.dataset.spec, kind))
        entry = int(torch.randint(count, (), generator=generator))
        if kind == "pairs":
            return self._real_pair("pairs", entry, generator)
        if kind == "volumes":
            return self._volume_pair(entry, generator)
        return self._label_map_pair(entry, generator)

    def validation_pairs(self) -> list[TrainingPair]:
        """The dataset's validation pairs, as given (loaded once)."""
        if self._validation is None:
            self._validation = [self._real_pair("validation", i, None)
                                for i in range(len(self.dataset.spec.validation))]
        return self._validation

    def load_count(self, validation: bool = True) -> int:
        """How many items :meth:`load_all` reads (each volume with its copies, label maps, pairs)."""
        spec = self.dataset.spec
        return (len(spec.volumes) * (self.config.deformed_copies + 1) + len(spec.label_maps) + len(spec.pairs)
                + (len(spec.validation) if validation else 0))

    def load_all(self, validation: bool = True, progress: Optional[Callable[[str], None]] = None) -> None:
        """Read (and encode) every volume now, so that a bad file stops the run before training;
        ``progress(what)`` is called after each of the :meth:`load_count` items."""
        spec = self.dataset.spec
        done = progress or (lambda what: None)
        for i, entry in enumerate(spec.volumes):
            image = self._image(f"volumes[{i}].image", entry.image)
            self._label(f"volumes[{i}].label", entry.label, Grid.from_image(image))
            self._features(image)
            done(f"volumes[{i}]")
            for number in range(1, self.config.deformed_copies + 1):
                self._copy(i, number)
                done(f"volumes[{i}] copy {number}")
        for i in range(len(spec.label_maps)):
            self._label_map(i)
            done(f"label_maps[{i}]")
        for i in range(len(spec.pairs)):
            self._real_pair("pairs", i, None)
            done(f"pairs[{i}]")
        if validation:
            for i, _ in enumerate(self.validation_pairs()):
                done(f"validation[{i}]")
