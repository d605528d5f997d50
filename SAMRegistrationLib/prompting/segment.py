"""Point prompts -> 3D regions: decode on the prompt's slice, then propagate slice by slice.

The slices are the encoder's own: the same axis, canvas and cached embeddings as the
``litemedsam`` features of the registration (every k-th slice; between encoded slices the
mask is interpolated when it is resampled back onto the image grid). Each neighbour is
prompted with the box around the previous slice's mask (LiteMedSAM, like MedSAM, was trained
on boxes, and adding points to a box makes its masks worse); propagation stops where the decoder's mask vanishes, shrinks below a fraction of
the largest slice, stops overlapping the previous slice, or stops resembling the clicked
region (cosine of mean embeddings, the region's prototype, below ``min_similarity``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from ..features.litemedsam import LiteMedSAMEncoder
from ..features.slicewise import SliceWiseEncoder, stack_grid
from ..errors import InputError
from ..grid import Grid
from ..prompts import Structure
from .decoder import Decoded, PromptDecoder

#: how the first slice is prompted from the user's clicks (measured on acdc067; see README):
#: the clicks as points; the best of three masks for them; a box around that mask; or boxes
#: of several sizes centred on the click, keeping the decoder's most confident mask that
#: contains every positive click and no negative one (LiteMedSAM was distilled from MedSAM,
#: which was trained on boxes: its point prompts alone give empty masks)
PROMPT_MODES = ("points", "multimask", "points+box", "box-search")
DEFAULT_PROMPT_MODE = "box-search"
BOX_HALF_SIZES_MM = (10.0, 15.0, 20.0, 30.0, 45.0)


@dataclass
class SliceCanvas:
    """The encoder's slice lattice of one image: geometry and cached embeddings."""
    grid: Grid                    # canvas pixels x encoded slices, in the image's frame
    axis: int                     # index axis of the slices
    embeddings: torch.Tensor      # (C, D, H, W) float16, tensor layout of ``embedding_grid``
    embedding_grid: Grid          # embedding cells (canvas pixels pooled by the encoder's stride)

    @property
    def in_plane(self) -> tuple[int, int]:
        """(column axis, row axis) of a slice image."""
        a, b = (x for x in range(3) if x != self.axis)
        return a, b

    @property
    def count(self) -> int:
        return self.grid.size[self.axis]

    def embedding(self, index: int) -> torch.Tensor:
        return self.embeddings.select(1 + (2 - self.axis), index)          # (C, rows/4, cols/4)

    def locate(self, lps: np.ndarray) -> tuple[int, np.ndarray]:
        """(slice index, (column, row) canvas pixel) of a physical point."""
        index = self.grid.world_to_index(np.asarray(lps, float)[None])[0]
        col, row = self.in_plane
        return int(round(index[self.axis])), np.array([index[col], index[row]])


def prompt_slicing(settings):
    """The slicing the prompt decoder's embeddings use: the encoder's own where it encodes slices
    (so its cached stacks serve both when the canvas agrees), else the defaults;
    ``prompt_params.slice_step`` overrides the step. The canvas is always LiteMedSAM's own 256,
    which the decoder was trained on (the registration features default to a smaller one, so
    with prompts both volumes are encoded at both sizes, each once and cached); the numeric
    route is the one the model is loaded with (:func:`..features.litemedsam.route`)."""
    from ..encoders.litemedsam import LiteMedSAMParams
    from ..encoders.slicewise import SliceParams
    from ..features.litemedsam import route
    params = settings.encoder_params
    own = dict(precision=route(settings), canvas=LiteMedSAMEncoder.canvas)
    slicing = LiteMedSAMParams(slice_axis=params.slice_axis, slice_step=params.slice_step, **own) \
        if isinstance(params, SliceParams) else LiteMedSAMParams(**own)
    if settings.prompt_params.slice_step is not None:
        slicing = slicing.replaced(slice_step=settings.prompt_params.slice_step)
    return slicing


def slice_canvas(image01: sitk.Image, settings, reporter=None, fraction=(0.0, 1.0),
                 view: str = "identity") -> SliceCanvas:
    """The ``litemedsam`` slice lattice of ``image01`` (embeddings from the feature cache),
    its slices seen through ``view`` (see ``slicewise.VIEWS``), at :func:`prompt_slicing`."""
    from ..encoders.litemedsam import PLUGIN as litemedsam
    encoder = SliceWiseEncoder("litemedsam", settings, litemedsam.slice_model, prompt_slicing(settings))
    stack, info = encoder.stack(image01, reporter or (lambda *a, **k: None), fraction, view)
    axis = "xyz".index(info["axis"])
    canvas = stack_grid(image01, axis, info["slice_step"], LiteMedSAMEncoder.canvas,
                        LiteMedSAMEncoder.size_multiple, LiteMedSAMEncoder.flexible_size)
    return SliceCanvas(canvas, axis, stack.features, stack.grid)


def _box(mask: torch.Tensor, margin: int) -> Optional[torch.Tensor]:
    rows, cols = torch.nonzero(mask, as_tuple=True)
    if rows.numel() == 0:
        return None
    h, w = mask.shape
    return torch.tensor([max(int(cols.min()) - margin, 0), max(int(rows.min()) - margin, 0),
                         min(int(cols.max()) + margin, w - 1), min(int(rows.max()) + margin, h - 1)], dtype=torch.float32)


def _pixels(mask: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    h, w = mask.shape
    cols = points[:, 0].round().long().clamp(0, w - 1)
    rows = points[:, 1].round().long().clamp(0, h - 1)
    return mask[rows, cols]


def _prototype(embedding: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit mean embedding of the cells a canvas mask covers (a region's prototype)."""
    stride = mask.shape[0] // embedding.shape[-2]
    cells = F.max_pool2d(mask[None, None].float(), stride, stride)[0, 0] > 0
    return F.normalize(embedding.float()[:, cells].mean(1), dim=0)


def _contains(mask: torch.Tensor, points: torch.Tensor) -> bool:
    return bool(_pixels(mask, points).all()) if len(points) else True


def _touches(mask: torch.Tensor, points: torch.Tensor) -> bool:
    return bool(_pixels(mask, points).any()) if len(points) else False


class RegionSegmenter:
    """Segments clicked structures in 3D on a :class:`SliceCanvas`."""

    def __init__(self, decoder: PromptDecoder, mode: str = DEFAULT_PROMPT_MODE, min_fraction: float = 0.15,
                 min_overlap: float = 0.3, min_similarity: float = 0.5, box_margin: int = 4) -> None:
        if mode not in PROMPT_MODES:
            raise InputError(f"unknown prompt mode {mode!r}; choose one of: {', '.join(PROMPT_MODES)}")
        self.decoder, self.mode = decoder, mode
        self.min_fraction, self.min_overlap, self.box_margin = min_fraction, min_overlap, box_margin
        self.min_similarity = min_similarity

    def _clicks_on(self, canvas: SliceCanvas, structure: Structure, index: int):
        points, labels = [], []
        for lps, label in [(p, 1) for p in structure.positive] + [(p, 0) for p in structure.negative]:
            s, xy = canvas.locate(lps)
            if s == index:
                points.append(xy)
                labels.append(label)
        if not points:
            return None, None
        return torch.tensor(np.array(points), dtype=torch.float32), torch.tensor(labels)

    def _first(self, canvas: SliceCanvas, structure: Structure, index: int) -> Decoded:
        points, labels = self._clicks_on(canvas, structure, index)
        embedding = canvas.embedding(index)
        if self.mode == "points":
            return self.decoder.decode(embedding, points, labels)
        decoded = self.decoder.decode(embedding, points, labels, multimask=True)
        if self.mode == "multimask":
            return decoded
        if self.mode == "points+box":
            box = _box(decoded.logits > 0, self.box_margin)
            return decoded if box is None else self.decoder.decode(embedding, points, labels, box=box)
        return self._box_search(canvas, embedding, points, labels, structure.half_size_mm)

    def _box_search(self, canvas: SliceCanvas, embedding: torch.Tensor, points: torch.Tensor,
                    labels: torch.Tensor, expected_half_mm: Optional[float] = None) -> Decoded:
        positive, negative = points[labels == 1], points[labels == 0]
        spread = (positive.max(0).values - positive.min(0).values) / 2
        pixel = canvas.grid.spacing[canvas.in_plane[0]]
        sizes = BOX_HALF_SIZES_MM
        if expected_half_mm:   # a found region should be about as large as the clicked one
            sizes = tuple(expected_half_mm * f for f in (1.0, 1.25, 1.6, 2.0))

        def search(centre: torch.Tensor) -> Optional[Decoded]:
            best = None
            for half_mm in sizes:
                half = spread + half_mm / pixel
                decoded = self.decoder.decode(embedding, box=torch.cat([centre - half, centre + half]))
                mask = decoded.logits > 0
                if _contains(mask, positive) and not _touches(mask, negative) and \
                        (best is None or decoded.score > best.score):
                    best = decoded
            return best

        best = search(positive.mean(0))
        if best is not None and expected_half_mm:
            # a found click may sit off the structure's centre: search again around the mask
            rows, cols = torch.nonzero(best.logits > 0, as_tuple=True)
            again = search(torch.stack([cols.float().mean(), rows.float().mean()]))
            if again is not None and again.score >= best.score - 0.05:
                best = again
        if best is None:
            return Decoded(torch.full([4 * n for n in embedding.shape[-2:]], -1.0), 0.0)
        return best

    def _next(self, canvas: SliceCanvas, structure: Structure, index: int, previous: torch.Tensor,
              has_clicks: bool) -> Decoded:
        """A propagated slice, prompted by the box of its neighbour's mask and, where it has
        clicks of its own, by those too (the box grown to hold its positive clicks)."""
        embedding = canvas.embedding(index)
        box = _box(previous, self.box_margin)
        points, labels = self._clicks_on(canvas, structure, index) if has_clicks else (None, None)
        if points is None:
            return self.decoder.decode(embedding, box=box)
        positive = points[labels == 1]
        if len(positive):
            box = torch.cat([torch.minimum(box[:2], positive.min(0).values - self.box_margin),
                             torch.maximum(box[2:], positive.max(0).values + self.box_margin)])
        return self.decoder.decode(embedding, points, labels, box=box)

    def segment(self, canvas: SliceCanvas, structure: Structure) -> tuple[np.ndarray, dict]:
        """(D, H, W) bool mask on the canvas lattice (tensor layout) and propagation facts."""
        if not structure.positive:
            raise InputError(f"structure {structure.label!r} has no positive point")
        starts = [canvas.locate(p)[0] for p in structure.positive]
        inside = [s for s in starts if 0 <= s < canvas.count]
        if not inside:
            raise InputError(f"the clicks of structure {structure.label!r} lie outside the encoded slices")
        start = inside[0]               # the first (primary) click's slice; further clicks refine
        clicked = {canvas.locate(p)[0] for p in structure.positive + structure.negative}
        masks: dict[int, torch.Tensor] = {}
        first = self._first(canvas, structure, start)
        masks[start] = first.logits > 0
        largest = int(masks[start].sum())
        reference = _prototype(canvas.embedding(start), masks[start])
        for direction in (-1, 1):
            previous, index = masks[start], start + direction
            while 0 <= index < canvas.count and bool(previous.any()):
                decoded = self._next(canvas, structure, index, previous, index in clicked)
                mask = decoded.logits > 0
                area = int(mask.sum())
                overlap = int((mask & previous).sum()) / max(area, 1)
                if area == 0 or area < self.min_fraction * largest or overlap < self.min_overlap:
                    break
                # past the structure's end the box still yields a mask, but of other tissue:
                # its mean embedding no longer resembles the clicked region's
                if float(_prototype(canvas.embedding(index), mask) @ reference) < self.min_similarity:
                    break
                masks[index] = mask
                largest = max(largest, area)
                previous, index = mask, index + direction
        shape = tuple(reversed(canvas.grid.size))                          # (D, H, W)
        volume = np.zeros(shape, bool)
        for index, mask in masks.items():
            # slice images are (rows, cols) = the remaining tensor dims in order
            np.moveaxis(volume, 2 - canvas.axis, 0)[index] = mask.numpy()
        info = {"label": structure.label, "slices": [min(masks), max(masks)], "start_slice": start,
                "start_score": round(first.score, 3), "mode": self.mode}
        return volume, info


def label_image(image01: sitk.Image, canvas: SliceCanvas, masks: list[np.ndarray]) -> tuple[sitk.Image, list[int]]:
    """Canvas masks -> a label image on ``image01``'s grid (label i + 1 for ``masks[i]``) and
    the voxel count of each label. Each mask is resampled linearly (which interpolates between
    encoded slices) and thresholded at 0.5; later masks do not overwrite earlier ones."""
    labels = np.zeros(sitk.GetArrayViewFromImage(image01).shape, np.uint16)
    counts = []
    for number, mask in enumerate(masks, start=1):
        on_canvas = canvas.grid.image_from_array(mask.astype(np.float32))
        resampled = sitk.Resample(on_canvas, image01, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        region = (sitk.GetArrayViewFromImage(resampled) > 0.5) & (labels == 0)
        labels[region] = number
        counts.append(int(region.sum()))
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image01)
    return out, counts


def regions_on_image(image01: sitk.Image, canvas: SliceCanvas, segmenter: RegionSegmenter,
                     structures: list[Structure]) -> tuple[sitk.Image, list[dict]]:
    """A label image on ``image01``'s grid with label i + 1 for ``structures[i]``."""
    masks, infos = zip(*(segmenter.segment(canvas, s) for s in structures)) if structures else ((), ())
    image, counts = label_image(image01, canvas, list(masks))
    infos = [dict(info, voxels=count) for info, count in zip(infos, counts)]
    return image, infos


def region_quality(regions: sitk.Image, segmentation: sitk.Image, infos: list[dict]) -> list[dict]:
    """For each region: the label of ``segmentation`` it overlaps most and their Dice."""
    found = sitk.GetArrayViewFromImage(regions)
    truth = sitk.GetArrayViewFromImage(segmentation)
    out = []
    for number, info in enumerate(infos, start=1):
        region = found == number
        values, counts = np.unique(truth[region], return_counts=True)
        keep = values != 0
        if not keep.any():
            out.append({"region": info["label"], "label": None, "dice": 0.0})
            continue
        label = int(values[keep][np.argmax(counts[keep])])
        target = truth == label
        dice = 2.0 * float((region & target).sum()) / float(region.sum() + target.sum())
        out.append({"region": info["label"], "label": label, "dice": round(dice, 4)})
    return out
