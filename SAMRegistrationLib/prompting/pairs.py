"""Clicks in either image -> pairs of corresponding regions, one label per structure.

A structure clicked in both images is segmented in each; one clicked in only one image is
segmented there and found in the other by :func:`correspond.find_click` (PromptReg's inverse
prompt with a physical prior and a soft-argmax), then segmented at the found click. A found
region must match back: searched for in the first image, it must land on the region it came
from (mutual nearest neighbours at the region level), or the pair is left out; so is a pair
whose region, in either image, is not an object there (:mod:`.distinct`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..device import resolve_device
from ..prompts import group_structures
from .correspond import find_click
from .decoder import PromptDecoder
from .distinct import distinctness, gradient_magnitude, indistinct
from .segment import RegionSegmenter, SliceCanvas, Structure, label_image, slice_canvas

SIDES = ("fixed", "moving")


#: a region the decoder itself doubts (its IoU estimate on the first slice) is not used
MIN_DECODER_SCORE = 0.5
#: a region mostly inside an earlier structure's region duplicates it and is not used
MAX_SHARED_FRACTION = 0.5
#: corresponding regions of one structure have comparable volumes (ED/ES hearts differ ~2x)
MAX_VOLUME_RATIO = 3.0
#: auxiliary prompts (PromptReg, Eq. 2): added while the two directed Hausdorff distances of a
#: pair differ by more than this (the paper's sigma = 20), at most this many times
AUXILIARY_SIGMA_MM = 20.0
AUXILIARY_ROUNDS = 3
HAUSDORFF_POINTS = 4000


def half_size_mm(canvas: SliceCanvas, mask: np.ndarray) -> float:
    """Half the in-plane extent (mm) of a region's largest slice: the box size it needs."""
    slices = np.moveaxis(mask, 2 - canvas.axis, 0)
    largest = slices[int(np.argmax(slices.reshape(len(slices), -1).sum(1)))]
    rows, cols = np.nonzero(largest)
    pixel = canvas.grid.spacing[canvas.in_plane[0]]
    return 0.5 * pixel * float(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)


def _volume_mm3(canvas: SliceCanvas, mask: np.ndarray) -> float:
    return float(mask.sum()) * float(np.prod(canvas.grid.spacing))


def _unusable(found: dict, accepted: dict, canvases: dict) -> Optional[str]:
    """Why a structure's regions cannot drive the registration, or None. A wrong pair pulls the
    anatomy the wrong way, so doubtful ones are reported and left out."""
    for side, (mask, info) in found.items():
        if not mask.any():
            return f"no {side} region"
        if info.get("not_mutual"):
            return (f"the {side} region, searched for in the other image, does not lead back to the "
                    f"clicked region ({info['matches_back_mm']:.0f} mm off)")
        if info.get("start_score", 1.0) < MIN_DECODER_SCORE:
            return f"the decoder is not confident of the {side} region ({info['start_score']:.2f})"
        for earlier in accepted[side]:
            if (mask & earlier).sum() > MAX_SHARED_FRACTION * mask.sum():
                return f"the {side} region lies inside an earlier structure's region"
    if len(found) == 2:
        volumes = [_volume_mm3(canvases[side], found[side][0]) for side in SIDES]
        if max(volumes) > MAX_VOLUME_RATIO * min(volumes):
            return f"the regions' volumes differ more than {MAX_VOLUME_RATIO:g}x ({volumes[0]:.0f} vs {volumes[1]:.0f} mm3)"
    return None


def _world_points(canvas: SliceCanvas, mask: np.ndarray, limit: Optional[int] = HAUSDORFF_POINTS) -> np.ndarray:
    """LPS positions of the voxels of a canvas mask (at most ``limit``, evenly strided)."""
    zyx = np.argwhere(mask)
    if limit and len(zyx) > limit:
        zyx = zyx[:: int(np.ceil(len(zyx) / limit))]
    return canvas.grid.index_to_world(zyx[:, ::-1].astype(float))


def hausdorff_discrepancy(source: np.ndarray, found: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Directed Hausdorff distances between two point sets in one frame: (source -> found,
    found -> source, the source point farthest from ``found``, the found point farthest from
    ``source``)."""
    from scipy.spatial import cKDTree
    to_found, _ = cKDTree(found).query(source)
    to_source, _ = cKDTree(source).query(found)
    return (float(to_found.max()), float(to_source.max()), source[int(np.argmax(to_found))],
            found[int(np.argmax(to_source))])


def auxiliary_prompts(segmenter: RegionSegmenter, canvases: dict, side: str, structure: Structure,
                      mask: np.ndarray, info: dict, source_mask: np.ndarray, to_other: dict,
                      sigma_mm: float = AUXILIARY_SIGMA_MM, rounds: int = AUXILIARY_ROUNDS) -> tuple[np.ndarray, dict]:
    """PromptReg's auxiliary prompts for a region found on ``side`` from ``source_mask``: while
    the pair's directed Hausdorff distances differ by more than ``sigma_mm``, a part of the
    found region far from the source (a leak) gets a negative click, or a part of the source
    that the found region misses gets a positive click, and the region is segmented again.
    The source is carried into ``side``'s frame by the affine (the registration's prior)."""
    other = "moving" if side == "fixed" else "fixed"
    carry = to_other[other]                                 # other -> side points
    source = np.array([carry.TransformPoint(tuple(float(c) for c in p))
                       for p in _world_points(canvases[other], source_mask)])
    added = []
    for _ in range(rounds):
        if not mask.any():
            break
        to_found, to_source, missed, leaked = hausdorff_discrepancy(source, _world_points(canvases[side], mask))
        if abs(to_found - to_source) <= sigma_mm:
            break
        if to_source > to_found:
            structure.negative.append(leaked)
            added.append(("negative", [round(float(c), 1) for c in leaked]))
        else:
            structure.positive.append(missed)
            added.append(("positive", [round(float(c), 1) for c in missed]))
        mask, info = segmenter.segment(canvases[side], structure)
    if added:
        info = dict(info, auxiliary_prompts=added)
    return mask, info


def _view_pairs(views: dict, source: str, target: str) -> list:
    """(source, target) canvases of every extra view, for :func:`find_click`."""
    return list(zip(views.get(source, []), views.get(target, [])))


def _matches_back(canvases: dict, side: str, found_mask: np.ndarray, source_mask: np.ndarray,
                  to_other: dict, views: Optional[dict] = None) -> tuple[bool, float]:
    """Whether the region found on ``side``, searched for in the other image, lands on the
    region it was found from (within one embedding cell); and the distance in mm."""
    other = "moving" if side == "fixed" else "fixed"
    back = find_click(canvases[side], found_mask, canvases[other], to_other[other],
                      views=_view_pairs(views or {}, side, other))
    if back is None or not source_mask.any():
        return False, float("inf")
    voxels = _world_points(canvases[other], source_mask, limit=None)
    distance = float(np.linalg.norm(voxels - back.click, axis=1).min())
    col, row = canvases[other].in_plane
    cell = max(canvases[other].embedding_grid.spacing[col], canvases[other].embedding_grid.spacing[row])
    return distance <= cell, distance


def marginalisation_views(settings) -> list[str]:
    """The extra views the correspondences are averaged over (``prompt_params.views``; each is
    one more cached encoding of both images' slices; measured where the default is declared)."""
    return list(settings.prompt_params.views)


class DistinctnessCheck:
    """Drops a pair whose region, in either image, is not an object there (see
    :mod:`.distinct`); ``prompt_params.min_edge`` / ``prompt_params.min_contrast`` set the
    bounds (0 turns a bound off)."""

    def __init__(self, images01: dict[str, sitk.Image], canvases: dict, settings) -> None:
        self.images01, self.canvases = images01, canvases
        self.min_edge = float(settings.prompt_params.min_edge)
        self.min_contrast = float(settings.prompt_params.min_contrast)
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, found: dict) -> tuple[Optional[str], dict]:
        """(why the pair is dropped or None, ``{side: {"edge", "contrast"}}``)."""
        stats = {}
        for side in SIDES:
            if side not in self._arrays:
                image = self.images01[side]
                self._arrays[side] = (sitk.GetArrayFromImage(image), gradient_magnitude(image))
            labels, _ = label_image(self.images01[side], self.canvases[side], [found[side][0]])
            stats[side] = distinctness(*self._arrays[side], sitk.GetArrayViewFromImage(labels) > 0)
        for side in SIDES:
            if indistinct(stats[side], self.min_edge, self.min_contrast):
                return (f"the {side} region does not stand out as an object in its image (edge ratio "
                        f"{stats[side]['edge']:.2f}, contrast {stats[side]['contrast']:.2f}; needs "
                        f"{self.min_edge:g} and {self.min_contrast:g})"), stats
        return None, stats


def paired_regions(images01: dict[str, sitk.Image], prompts: dict, affine: sitk.Transform, settings,
                   reporter=None) -> dict[str, tuple[sitk.Image, list[dict]]]:
    """``{"fixed": (labels, infos), "moving": (labels, infos)}``; label i + 1 is the i-th structure
    on both sides. ``affine`` maps fixed points to moving points."""
    say = reporter or (lambda *a, **k: None)
    mutual = settings.prompt_params.mutual_check
    auxiliary = settings.prompt_params.auxiliary
    clicked = {side: {s.label: s for s in group_structures(prompts.get(side) or [], side)}
               for side in SIDES if prompts.get(side)}
    order: list[str] = []
    for side in ("moving", "fixed"):
        order += [label for label in clicked.get(side, {}) if label not in order]
    canvases: dict[str, SliceCanvas] = {}
    for side in SIDES:
        say("encode", 1.0, f"slice embeddings of the {side} image for its regions")
        canvases[side] = slice_canvas(images01[side], settings)
    views: dict[str, list[SliceCanvas]] = {side: [] for side in SIDES}
    for name in marginalisation_views(settings):
        for side in SIDES:
            say("encode", 1.0, f"slice embeddings of the {side} image, view {name}, for the correspondences")
            views[side].append(slice_canvas(images01[side], settings, view=name))
    segmenter = RegionSegmenter(PromptDecoder(device=resolve_device(settings.device)))
    distinct = DistinctnessCheck(images01, canvases, settings)
    to_other = {"fixed": affine, "moving": affine.GetInverse()}       # maps points of side -> other side
    masks: dict[str, list] = {side: [] for side in SIDES}
    infos: dict[str, list] = {side: [] for side in SIDES}
    for label in order:
        say("encode", 1.0, f"segmenting structure {label!r}")
        found: dict[str, Optional[tuple]] = {}
        for side in SIDES:
            if label in clicked.get(side, {}):
                mask, info = segmenter.segment(canvases[side], clicked[side][label])
                found[side] = (mask, dict(info, found_by="click"))
        unusable = _unusable(found, masks, canvases)
        if unusable:
            for side in SIDES:
                empty = np.zeros(tuple(reversed(canvases[side].grid.size)), bool)
                info = found[side][1] if side in found else {"label": label}
                masks[side].append(empty)
                infos[side].append(dict(info, dropped=unusable))
            continue
        for side in SIDES:
            other = "moving" if side == "fixed" else "fixed"
            if side in found:
                continue
            source_mask = found[other][0]
            # find_click wants target -> source points: the target is ``side``
            match = find_click(canvases[other], source_mask, canvases[side], to_other[side],
                               views=_view_pairs(views, other, side))
            if match is None:
                empty = np.zeros(tuple(reversed(canvases[side].grid.size)), bool)
                found[side] = (empty, {"label": label, "found_by": "correspondence", "slices": None})
                continue
            structure = Structure(label, [match.click], half_size_mm=half_size_mm(canvases[other], source_mask))
            mask, info = segmenter.segment(canvases[side], structure)
            if auxiliary:
                mask, info = auxiliary_prompts(segmenter, canvases, side, structure, mask, info, source_mask, to_other)
            info = dict(info, found_by="correspondence", similarity=round(match.similarity, 3),
                        click=[round(float(c), 2) for c in match.click])
            if mutual and mask.any():
                mutual_ok, distance = _matches_back(canvases, side, mask, source_mask, to_other, views)
                info["matches_back_mm"] = round(distance, 1)
                if not mutual_ok:
                    info["not_mutual"] = True
            found[side] = (mask, info)
        dropped = _unusable(found, masks, canvases)
        stats: dict = {}
        if not dropped:
            dropped, stats = distinct(found)
        for side in SIDES:
            mask, info = found[side]
            info = dict(info, **stats.get(side, {}))
            masks[side].append(np.zeros_like(mask) if dropped else mask)
            infos[side].append(dict(info, dropped=dropped) if dropped else info)
    out = {}
    for side in SIDES:
        image, counts = label_image(images01[side], canvases[side], masks[side])
        out[side] = (image, [dict(info, voxels=count) for info, count in zip(infos[side], counts)])
    return out
