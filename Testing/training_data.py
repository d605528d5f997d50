"""Small datasets for the tests of the training machinery: blob volumes with label maps,
label-only maps, real pairs (blobs moved) with landmarks, and the dataset JSON naming them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SPACING = 2.0


def blob_volume(size=(24, 24, 24), seed: int = 0,
                shift_mm=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, labels, blob centres in world mm): an ellipsoidal body with texture and three
    labelled blobs (apart, inside the body) at seeded places, the blobs moved by ``shift_mm``;
    arrays are (z, y, x)."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    z, y, x = np.meshgrid(*(SPACING * (np.arange(n) - (n - 1) / 2) for n in (nz, ny, nx)), indexing="ij")
    half = SPACING * (np.asarray(size) - 1) / 2
    body = (x / (0.85 * half[0])) ** 2 + (y / (0.85 * half[1])) ** 2 + (z / (0.85 * half[2])) ** 2 < 1
    image = np.where(body, 100.0 + 20.0 * np.sin(x / 5.0) * np.cos(y / 6.0), 0.0)
    labels = np.zeros(x.shape, np.uint8)
    centres = []
    places = ((-0.4, -0.3, 0.0), (0.35, -0.2, 0.3), (0.0, 0.4, -0.3))      # far enough apart not to touch
    for (label, value), place in zip(((1, 220.0), (2, 40.0), (3, 160.0)), places):
        centre = (np.asarray(place) + rng.uniform(-0.08, 0.08, 3)) * half + np.asarray(shift_mm)
        radius = rng.uniform(0.18, 0.22) * half.min()
        inside = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) < radius ** 2
        image[inside] = value
        labels[inside] = label
        centres.append(centre)
    return image.astype(np.float32), labels, np.asarray(centres)


def write_volume(array: np.ndarray, path: Path) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((SPACING,) * 3)
    image.SetOrigin([-(n - 1) * SPACING / 2 for n in image.GetSize()])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def write_points(points: np.ndarray, path: Path) -> Path:
    path.write_text("x,y,z\n" + "".join(f"{p[0]:.4f},{p[1]:.4f},{p[2]:.4f}\n" for p in points))
    return path


def write_pair(folder: Path, name: str, seed: int, shift_mm, size) -> dict[str, str]:
    fixed, fixed_labels, fixed_points = blob_volume(size, seed)
    moving, moving_labels, moving_points = blob_volume(size, seed, shift_mm)
    write_volume(fixed, folder / f"{name}_fixed.nii.gz")
    write_volume(0.9 * moving + 5.0, folder / f"{name}_moving.nii.gz")
    write_volume(fixed_labels, folder / f"{name}_fixed_seg.nii.gz")
    write_volume(moving_labels, folder / f"{name}_moving_seg.nii.gz")
    write_points(fixed_points, folder / f"{name}_fixed.csv")
    write_points(moving_points, folder / f"{name}_moving.csv")
    return {"fixed": f"{name}_fixed.nii.gz", "moving": f"{name}_moving.nii.gz",
            "fixed_label": f"{name}_fixed_seg.nii.gz", "moving_label": f"{name}_moving_seg.nii.gz",
            "fixed_landmarks": f"{name}_fixed.csv", "moving_landmarks": f"{name}_moving.csv"}


def write_dataset(folder: Path, volumes: int = 2, label_maps: int = 1, pairs: int = 1, validation: int = 1,
                  size=(24, 24, 24), shift_mm=(4.0, -2.0, 2.0), labels=(1, 2, 3)) -> Path:
    """A dataset JSON in ``folder`` with the given numbers of entries of each kind."""
    folder.mkdir(parents=True, exist_ok=True)
    spec: dict = {"name": "blobs", "volumes": [], "label_maps": [], "pairs": [], "validation": []}
    for i in range(volumes):
        image, seg, _ = blob_volume(size, seed=10 + i)
        write_volume(image, folder / f"volume{i}.nii.gz")
        write_volume(seg, folder / f"volume{i}_seg.nii.gz")
        spec["volumes"].append({"image": f"volume{i}.nii.gz", "label": f"volume{i}_seg.nii.gz"})
    for i in range(label_maps):
        _, seg, _ = blob_volume(size, seed=20 + i)
        write_volume(seg, folder / "maps" / f"map{i}.nii.gz")
        spec["label_maps"].append({"label": f"maps/map{i}.nii.gz"})
    for i in range(pairs):
        spec["pairs"].append(write_pair(folder, f"pair{i}", 30 + i, shift_mm, size))
    for i in range(validation):
        spec["validation"].append(write_pair(folder, f"val{i}", 40 + i, shift_mm, size))
    if labels:
        spec["labels"] = list(labels)
    path = folder / "dataset.json"
    path.write_text(json.dumps({k: v for k, v in spec.items() if v != []}, indent=1))
    return path
