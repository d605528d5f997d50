"""Benchmark cases: image pairs with whatever ground truth they have (labels, landmarks, a true field).

A case is plain data (paths and label lists), so it crosses the process boundary to the child
that runs one method as JSON. ``load_cases`` reads ``cases.json`` of the shared data folder;
``quick_cases`` makes the tiny, data-free pairs that ``samreg bench --quick`` (and CI) use.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError

DEFAULT_CASES = ("brain", "acdc067", "lung", "spine")
DATA_ENV = "SAMREG_DATA"


@dataclass
class Case:
    name: str
    fixed: str
    moving: str
    kind: str = ""
    fixed_seg: Optional[str] = None
    moving_seg: Optional[str] = None
    labels: list[int] = field(default_factory=list)
    label_names: dict[str, str] = field(default_factory=dict)
    fixed_landmarks: Optional[str] = None
    moving_landmarks: Optional[str] = None
    true_field: Optional[str] = None      # known fixed->moving displacement (synthetic cases)
    needs_affine: bool = False            # peers without their own affine get one (stated in the table)
    variant: str = "standard"             # standard | reoriented | synthetic

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Case":
        return cls(**data)

    @property
    def has_labels(self) -> bool:
        return bool(self.fixed_seg and self.moving_seg)

    @property
    def has_landmarks(self) -> bool:
        return bool(self.fixed_landmarks and self.moving_landmarks)

    def info(self) -> dict:
        """What the report needs to know about the case."""
        return {"kind": self.kind, "labels": list(self.labels), "label_names": dict(self.label_names),
                "landmarks": self.has_landmarks, "variant": self.variant}


def default_data_dir() -> Path:
    """``$SAMREG_DATA``, else ``../shared/data`` next to the repository, else next to the cwd."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    repo = Path(__file__).resolve().parents[2]
    for candidate in (repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if (candidate / "cases.json").is_file():
            return candidate
    return repo.parent / "shared" / "data"


def load_cases(data_dir: Path, names: Optional[list[str]] = None) -> list[Case]:
    """The named cases of ``data_dir/cases.json`` (default: brain, acdc067, lung, spine)."""
    data_dir = Path(data_dir).absolute()       # runs execute in their own folders
    index = data_dir / "cases.json"
    if not index.is_file():
        raise InputError(f"no benchmark data: {index} does not exist (use --data DIR, set {DATA_ENV}, "
                         "or run --quick, which needs no data)")
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {index}: {exc}") from None
    names = list(names or DEFAULT_CASES)
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise InputError(f"unknown case(s) {', '.join(unknown)}; {index} has {', '.join(sorted(entries))}")
    cases = []
    for name in names:
        entry = entries[name]
        if "fixed" not in entry or "moving" not in entry:
            raise InputError(f"case {name!r} in {index} has no fixed/moving pair")

        def path(key: str) -> Optional[str]:
            return str(data_dir / entry[key]) if entry.get(key) else None

        names_field = entry.get("label_names")
        cases.append(Case(
            name=name, fixed=path("fixed"), moving=path("moving"), kind=entry.get("kind", ""),
            fixed_seg=path("fixed_seg"), moving_seg=path("moving_seg"),
            labels=[int(v) for v in entry.get("labels", [])],
            label_names={str(k): str(v) for k, v in names_field.items()} if isinstance(names_field, dict) else {},
            fixed_landmarks=path("fixed_landmarks"), moving_landmarks=path("moving_landmarks"),
            needs_affine="needs affine" in entry.get("kind", "")))
        for key in ("fixed", "moving", "fixed_seg", "moving_seg", "fixed_landmarks", "moving_landmarks"):
            value = getattr(cases[-1], key)
            if value and not Path(value).exists():
                raise InputError(f"case {name!r}: {key} file {value} does not exist")
    return cases


# ----------------------------------------------------------------------------- data-free cases
def _translation_pair(folder: Path, shift_mm: tuple[float, float, float]) -> Case:
    """Two ellipsoid phantoms in a non-trivial frame, the moving one shifted by ``shift_mm`` (LPS).

    The fixed->moving map is then p -> p + shift everywhere: a field every method must recover
    with the right sign and axis, which proves each peer's output conversion.
    """
    import SimpleITK as sitk

    size, spacing = (48, 44, 36), (2.0, 2.2, 2.5)
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)      # rotated in-plane axes
    origin = (40.0, -50.0, -30.0)

    def phantom(offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
        matrix = np.asarray(direction).reshape(3, 3) @ np.diag(spacing)
        pts = idx @ matrix.T + np.asarray(origin) - offset
        centre = np.asarray(origin) + matrix @ (np.asarray(size) - 1) / 2.0
        rel = pts - centre
        body = ((rel / np.array([34.0, 30.0, 28.0])) ** 2).sum(1) <= 1.0
        organ = (((rel - np.array([8.0, -6.0, 4.0])) / np.array([12.0, 9.0, 10.0])) ** 2).sum(1) <= 1.0
        blob = (((rel - np.array([-12.0, 10.0, -6.0])) / 6.0) ** 2).sum(1) <= 1.0
        image = 0.2 * body + 0.5 * organ + 0.3 * blob + 0.05 * np.sin(rel[:, 0] / 3.0) * body
        labels = np.where(blob, 2, np.where(organ, 1, 0))
        # points were enumerated x-major: (nx, ny, nz) -> numpy's (z, y, x)
        return (image.reshape(size).transpose(2, 1, 0).astype(np.float32),
                labels.reshape(size).transpose(2, 1, 0).astype(np.uint8))

    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for role, offset in (("fixed", np.zeros(3)), ("moving", np.asarray(shift_mm, dtype=float))):
        image, labels = phantom(offset)
        for kind, array in ((role, image), (f"{role}_seg", labels)):
            img = sitk.GetImageFromArray(array)
            img.SetSpacing(spacing), img.SetDirection(direction), img.SetOrigin(origin)
            files[kind] = folder / f"{kind}.nii.gz"
            sitk.WriteImage(img, str(files[kind]))
    field_array = np.broadcast_to(np.asarray(shift_mm, dtype=np.float64), size[::-1] + (3,)).copy()
    true = sitk.GetImageFromArray(field_array, isVector=True)
    true.SetSpacing(spacing), true.SetDirection(direction), true.SetOrigin(origin)
    files["true_field"] = folder / "true_field.nrrd"
    sitk.WriteImage(true, str(files["true_field"]))
    return Case(name="shift", kind=f"phantom, known translation {shift_mm} mm (LPS)",
                **{k: str(v) for k, v in files.items()}, labels=[1, 2],
                label_names={"1": "organ", "2": "blob"}, variant="synthetic")


def quick_cases(folder: Path) -> list[Case]:
    """Data-free cases for ``--quick``: a known translation, and the demo brain at 6 mm."""
    from ..demo import make_demo_inputs

    cases = [_translation_pair(folder / "shift", (6.0, -4.0, 5.0))]
    made = make_demo_inputs(folder / "demo", spacing=6.0)
    files = made["files"]
    cases.append(Case(name="demo6mm", kind="MNI152 brain at 6 mm, known smooth deformation + intensity change",
                      fixed=str(files["fixed"]), moving=str(files["moving"]),
                      fixed_seg=str(files["fixed_seg"]), moving_seg=str(files["moving_seg"]),
                      labels=[1, 2], label_names={"1": "GM", "2": "WM"},
                      true_field=str(files["true_displacement"]), variant="synthetic"))
    return cases
