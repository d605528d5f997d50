"""The training dataset: a Learn2Reg-style JSON file parsed into typed classes.

::

    {"name": "cardiac-demo",
     "volumes":    [{"image": "a.nii.gz", "label": "a_seg.nii.gz"}],
     "label_maps": [{"label": "synthseg/000.nii.gz"}],
     "pairs":      [{"fixed": "f.nii.gz", "moving": "m.nii.gz", "fixed_label": "...", "moving_label": "...",
                     "fixed_landmarks": "...", "moving_landmarks": "..."}],
     "validation": [{"fixed": "...", "moving": "...", ...}],
     "labels": [1, 2, 3]}

``volumes`` are single images (synthetic pairs are made from them), ``label_maps`` label-only
maps (SynthMorph-style images are drawn from them), ``pairs`` real training pairs; at least one
of the three. Labels and landmarks are optional, and come in fixed/moving twos. ``labels`` lists
the label values that are scored (default: every non-zero value). Paths are relative to the
JSON file's folder unless absolute. Every problem is one :class:`InputError` line naming the
file and the field, e.g. ``dataset.json: volumes[2].image: no such file a.nii.gz``.

Torch-free: the CLI checks a dataset before importing torch.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InputError
from ..params import Parameters


class _Entry(Parameters):
    model_config = ConfigDict(strict=True)


class VolumeEntry(_Entry):
    image: str = Field(min_length=1)
    label: Optional[str] = Field(None, min_length=1)


class LabelMapEntry(_Entry):
    label: str = Field(min_length=1)


class PairEntry(_Entry):
    fixed: str = Field(min_length=1)
    moving: str = Field(min_length=1)
    fixed_label: Optional[str] = Field(None, min_length=1)
    moving_label: Optional[str] = Field(None, min_length=1)
    fixed_landmarks: Optional[str] = Field(None, min_length=1)
    moving_landmarks: Optional[str] = Field(None, min_length=1)

    @model_validator(mode="after")
    def _in_twos(self) -> "PairEntry":
        for kind in ("label", "landmarks"):
            if (getattr(self, f"fixed_{kind}") is None) != (getattr(self, f"moving_{kind}") is None):
                raise ValueError(f"fixed_{kind} and moving_{kind} come together (one is missing)")
        return self


class DatasetSpec(_Entry):
    name: str = Field(min_length=1)
    volumes: list[VolumeEntry] = []
    label_maps: list[LabelMapEntry] = []
    pairs: list[PairEntry] = []
    validation: list[PairEntry] = []
    labels: Optional[list[Annotated[int, Field(ge=1)]]] = None

    @model_validator(mode="after")
    def _has_training_data(self) -> "DatasetSpec":
        if not (self.volumes or self.label_maps or self.pairs):
            raise ValueError("needs at least one of volumes, label_maps or pairs")
        return self


_KINDS = ("volumes", "label_maps", "pairs", "validation")


def _location(parts) -> str:
    """('volumes', 2, 'image') -> 'volumes[2].image'."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _known_keys(location: tuple) -> list[str]:
    current: type[BaseModel] = DatasetSpec
    for part in location[:-1]:
        if isinstance(part, int):
            continue
        annotation = current.model_fields[part].annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return []
        current = inner
    return sorted(current.model_fields)


def _message(file: str, exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    location = tuple(error.get("loc", ()))
    where = _location(location)
    prefix = f"{file}: {where}: " if where else f"{file}: "
    if error.get("type") == "extra_forbidden":
        return f"{prefix}unknown key; known: {', '.join(_known_keys(location))}"
    if error.get("type") == "missing":
        return f"{prefix}missing"
    message = str(error.get("msg", "invalid value")).replace("\n", " ").removeprefix("Value error, ")
    if error.get("type") == "value_error":
        return prefix + message
    return f"{prefix}{message} (got {error.get('input')!r})"


@dataclass(frozen=True)
class Dataset:
    """A parsed dataset file; every path in it is checked to exist."""

    path: Path            # the JSON file, as given
    spec: DatasetSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def root(self) -> Path:
        return self.path.parent

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path

    def error(self, where: str, message: str) -> InputError:
        """An InputError naming this file and the field ``where`` (e.g. ``pairs[0].fixed``)."""
        return InputError(f"{self.path}: {where}: {message}")

    def files(self) -> Iterator[tuple[str, Path]]:
        """(field, resolved path) of every file named, in the file's order."""
        for kind in _KINDS:
            for index, entry in enumerate(getattr(self.spec, kind)):
                for key, value in entry.model_dump().items():
                    if value is not None:
                        yield f"{kind}[{index}].{key}", self.resolve(value)


def load_dataset(path: str | Path) -> Dataset:
    """Parse and check the dataset file ``path``; InputError (one line) on any problem."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise InputError(f"{file}: no such dataset file" if not path.exists() else f"{file}: not a file")
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{file}: cannot be read ({exc.__class__.__name__})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{file}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
    if not isinstance(document, dict):
        raise InputError(f"{file}: must hold a JSON object, not {type(document).__name__}")
    try:
        spec = DatasetSpec.model_validate(document)
    except ValidationError as exc:
        raise InputError(_message(file, exc)) from None
    dataset = Dataset(path, spec)
    for where, resolved in dataset.files():
        if not resolved.exists():
            raise dataset.error(where, f"no such file {_given(dataset, where)}")
    return dataset


def _given(dataset: Dataset, where: str) -> str:
    """The path as written in the file for field ``where``."""
    kind, rest = where.split("[", 1)
    index, key = rest.split("].", 1)
    return getattr(getattr(dataset.spec, kind)[int(index)], key)


def _content_digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (a DICOM series) by relative name and content."""
    from ..checkpoints import file_sha256
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{file_sha256(item)}\n".encode())
    return digest.hexdigest()


def data_hash(dataset: Dataset) -> str:
    """SHA-256 over the canonical entries (paths as written, the name left out) and the content of
    every file they name, so that a checkpoint records exactly which data it saw."""
    digest = hashlib.sha256()
    entries = dataset.spec.model_dump(exclude={"name"})
    digest.update(json.dumps(entries, sort_keys=True, separators=(",", ":")).encode())
    for where, path in dataset.files():
        digest.update(f"\n{where}\0{_content_digest(path)}".encode())
    return digest.hexdigest()
