"""Corresponding regions (PromptReg): a region segmented in one image -> a click in
the other image -> the corresponding region there.

The region's prototype (its mean slice embedding) is compared by cosine with every embedding
cell of the other image. Improvements over the public code's single global argmax:

* a physical prior: only cells within ``search_radius_mm`` of where the affine pre-alignment
  maps the region's centroid are candidates (the images are in physical space, so this is
  cheap and removes look-alikes elsewhere, e.g. the other kidney);
* a soft-argmax over the most similar cells (similarity within ``top_margin`` of the best),
  weighted by exp(similarity / temperature), instead of one noisy argmax cell;
* the prototype averages only cells wholly inside the region, and the click is the top cell
  nearest the soft centre, so it lies on the structure.
* optionally (``views``) the similarity is averaged over flipped, half-turned or zoomed views
  of the slices, each encoded anew: PromptReg's marginalisation over transformations, with
  fixed ones (repeatable, cached) that map back onto the embedding cells.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .decoder import STRIDE
from .segment import SliceCanvas


@dataclass
class Match:
    click: np.ndarray           # LPS mm in the target image
    similarity: float           # cosine at the click's cell
    candidates: int             # cells in the top set


def _cells(canvas: SliceCanvas, mask: np.ndarray, inside: float) -> torch.Tensor:
    """(D, H, W) canvas mask -> (D', h, w) bool embedding cells at least ``inside`` covered."""
    m = torch.from_numpy(mask).float()
    slice_dim = 2 - canvas.axis
    m = m.movedim(slice_dim, 0)[:, None]                               # (slices, 1, rows, cols)
    cells = F.avg_pool2d(m, STRIDE, STRIDE)[:, 0] >= inside
    return cells.movedim(0, slice_dim)


def prototype(canvas: SliceCanvas, mask: np.ndarray) -> torch.Tensor:
    """Unit mean embedding of the cells wholly inside the region (boundary cells mix in the
    surroundings); all touched cells for a region too thin to have any."""
    cells = _cells(canvas, mask, 1.0)
    if not bool(cells.any()):
        cells = _cells(canvas, mask, 1e-6)
    return F.normalize(canvas.embeddings.float()[:, cells].mean(1), dim=0)


def region_centroid(canvas: SliceCanvas, mask: np.ndarray) -> np.ndarray:
    index = np.argwhere(mask)[:, ::-1].astype(float)                    # (x, y, z) canvas indices
    return canvas.grid.index_to_world(index.mean(0))


def similarity_map(source: SliceCanvas, source_mask: np.ndarray, target: SliceCanvas) -> torch.Tensor:
    """Cosine of the region's prototype with every embedding cell of ``target``, each cell
    scored by its in-plane 3x3 neighbourhood (favours the inside of a similar region over
    isolated look-alike cells at its edges); the layout of ``target.embeddings[0]``."""
    proto = prototype(source, source_mask)
    channels = target.embeddings.shape[0]
    embeddings = F.normalize(target.embeddings.float().reshape(channels, -1), dim=0)
    similarity = (proto @ embeddings).reshape(target.embeddings.shape[1:])
    kernel = [3, 3, 3]
    kernel[2 - target.axis] = 1
    return F.avg_pool3d(similarity[None, None], kernel, stride=1, padding=[k // 2 for k in kernel],
                        count_include_pad=False)[0, 0]


def find_click(source: SliceCanvas, source_mask: np.ndarray, target: SliceCanvas,
               target_to_source: sitk.Transform, search_radius_mm: float = 40.0, top_margin: float = 0.05,
               temperature: float = 0.02, views: Sequence[tuple[SliceCanvas, SliceCanvas]] = ()) -> Optional[Match]:
    """Where in ``target`` the region ``source_mask`` (on ``source``'s canvas) most likely is.

    ``target_to_source`` maps target points to source points (the registration's affine when
    the target is the fixed image); its inverse places the region's centroid in the target.
    ``views`` are (source, target) canvases of the same slices seen through other views
    (flips, a half turn, a zoom; ``slicewise.VIEWS``): the similarity is averaged over them and the
    plain one, marginalising the match over those transformations (PromptReg).
    """
    if not source_mask.any():
        return None
    grid = target.embedding_grid
    points = grid.world_points(torch.float64).reshape(-1, 3).numpy()
    centre = np.asarray(target_to_source.GetInverse().TransformPoint(tuple(region_centroid(source, source_mask))))
    near = np.linalg.norm(points - centre, axis=1) <= search_radius_mm
    if not near.any():
        return None
    pairs = [(source, target), *views]
    similarity = sum(similarity_map(s, source_mask, t) for s, t in pairs) / len(pairs)
    similarity = similarity.reshape(-1).numpy()
    similarity[~near] = -np.inf
    best = float(similarity.max())
    top = similarity >= best - top_margin
    weights = np.exp((similarity[top] - best) / temperature)
    soft = (points[top] * weights[:, None]).sum(0) / weights.sum()
    candidates = points[top]
    # the click is the top cell nearest the soft centre: on the structure even when the
    # top cells surround it (a ring's centre lies outside the ring)
    nearest = int(np.argmin(np.linalg.norm(candidates - soft, axis=1)))
    return Match(candidates[nearest], float(similarity[top][nearest]), int(top.sum()))
