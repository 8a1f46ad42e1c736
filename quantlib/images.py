"""Image datasets as people keep them: a ``.zip`` or ``.tar`` of JPEG/PNG files.

Two layouts, the ones torchvision and most labelling tools write:

- class folders (ImageFolder): ``<class>/<image>``, or ``train/<class>/<image>`` with
  ``eval/<class>/<image>`` (``val/`` too) for the eval split;
- a CSV: ``labels.csv`` at the root with the columns ``file`` and ``label`` (a class name)
  and optionally ``split`` (``train`` or ``eval``).

Classes are the sorted class names, indices 0..C-1. Every image is decoded with Pillow and
shaped by :class:`Preprocess` (resize, center crop, channel order, scaling to [0, 1], mean and
std) into one float32 ``N x C x H x W`` array, one image at a time, so memory is that array
and one image. The archive is the uploader's: only regular JPEG/PNG members and
``labels.csv`` are read, compressed tars are refused (their listing would mean
decompressing all of it), and an image that decodes to more than :data:`MAX_PIXELS` is
refused before it is decoded. :func:`archive_listing` needs no Pillow: the API checks an
upload's layout with it.
"""

from __future__ import annotations

import csv
import io
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from quantlib.inputs import DataError
from quantlib.zipguard import MAX_ENTRIES, check_directory

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABELS_CSV = "labels.csv"
EVAL_FOLDERS = ("eval", "val")
# the most pixels one image may decode to (Pillow's own bomb guard is at 89 million)
MAX_PIXELS = 40_000_000
MAX_CSV_BYTES = 8 << 20  # ~150 000 rows: parsed by the API too, so bounded like the entry count


# an image size: N, or [H, W]
Size = (
    Annotated[int, Field(ge=1, le=8192)]
    | Annotated[list[Annotated[int, Field(ge=1, le=8192)]], Field(min_length=2, max_length=2)]
)


class Preprocess(BaseModel):
    """How images become the model's input: ``resize`` to H x W (or the shorter side to N, keeping the
    aspect), ``center_crop`` to H x W (or N x N), ``channels`` in that order, values scaled to [0, 1],
    then ``(x - mean) / std`` per channel (torchvision's Resize, CenterCrop, ToTensor, Normalize)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    resize: Size | None = Field(default=None, description="N (shorter side) or [H, W]")
    center_crop: Size | None = Field(default=None, description="N or [H, W]")
    channels: Literal["RGB", "BGR", "L"] = "RGB"
    mean: list[float] = Field(default=[0.0], min_length=1, max_length=3, description="one value, or one per channel")
    std: list[Annotated[float, Field(gt=0)]] = Field(
        default=[1.0], min_length=1, max_length=3, description="one value, or one per channel"
    )


@dataclass(frozen=True)
class Member:
    """One image of the archive: where it is, its split and class name."""

    name: str
    split: Literal["train", "eval"]
    label: str


@dataclass(frozen=True)
class Listing:
    """What an image archive holds, read from its directory (and ``labels.csv``) alone."""

    members: list[Member]
    classes: list[str]

    def split(self, split: str) -> list[Member]:
        return [member for member in self.members if member.split == split]


def is_image_archive(stream: IO[bytes]) -> bool:
    """A zip with no ``.npy`` member (an ``.npz`` is a zip of them), or a tar."""
    try:
        with _open(stream) as archive:
            return not any(name.endswith(".npy") for name in archive.names())
    except DataError:
        return False
    finally:
        stream.seek(0)


def archive_listing(stream: IO[bytes]) -> Listing:
    """The images, splits and classes of an archive, checked; :class:`DataError` naming what is wrong."""
    with _open(stream) as archive:
        listing = _listing(archive)
    stream.seek(0)
    return listing


def _listing(archive: _Archive) -> Listing:
    files = [name for name in archive.names() if not _ignored(name)]
    if LABELS_CSV in files:
        members = _from_csv(archive.read(LABELS_CSV, MAX_CSV_BYTES), set(files))
    else:
        members = _from_folders(files)
    if not any(member.split == "train" for member in members):
        raise DataError("the image archive has no training images (train/<class>/... or <class>/...)", field="data")
    classes = sorted({member.label for member in members})
    unknown = sorted(
        {member.label for member in members if member.split == "eval"}
        - {member.label for member in members if member.split == "train"}
    )
    if unknown:
        raise DataError(f"eval images of class {unknown[0]!r} have no training images of that class", field="data")
    return Listing(members, classes)


def load_image_dataset(
    stream: IO[bytes], preprocess: Preprocess, scratch: Path | None = None
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The archive as the arrays of an ``.npz`` dataset (``x_train``, ``y_train``, ``x_eval``, ``y_eval``),
    and the class names, label ``i`` being ``classes[i]``. With a ``scratch`` folder the decoded images
    go to memory-mapped ``.npy`` files there (bounded memory), else into memory."""
    arrays: dict[str, np.ndarray] = {}
    with _open(stream) as archive:
        listing = _listing(archive)
        index = {name: i for i, name in enumerate(listing.classes)}
        for split in ("train", "eval"):
            members = listing.split(split)
            if members:
                target = None if scratch is None else scratch / f"x_{split}.npy"
                arrays[f"x_{split}"] = _decoded(archive, members, preprocess, target)
                arrays[f"y_{split}"] = np.array([index[member.label] for member in members], np.int64)
    stream.seek(0)
    return arrays, listing.classes


def _decoded(archive: _Archive, members: list[Member], preprocess: Preprocess, target: Path | None) -> np.ndarray:
    """Every image of ``members`` preprocessed into one array, allocated once the first is seen: in
    memory, or as a ``.npy`` file at ``target`` mapped shared (written back to disk, not process data)."""
    out: np.ndarray | None = None
    for i, member in enumerate(members):
        image = _preprocessed(archive, member.name, preprocess)
        if out is None:
            shape = (len(members), *image.shape)
            out = np.empty(shape, np.float32) if target is None else _mapped_file(target, shape)
        elif image.shape != out.shape[1:]:
            first = members[0].name
            raise DataError(
                f"image {member.name!r} is {_size(image)} after preprocessing, {first!r} is {_size(out[0])}: set "
                "spec.preprocess.resize (and center_crop) so every image has one size",
                field="data",
            )
        out[i] = image
    assert out is not None  # members is never empty here
    return out


def _mapped_file(target: Path, shape: tuple[int, ...]) -> np.ndarray:
    target.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=shape)


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[2]}"


def _preprocessed(archive: _Archive, name: str, preprocess: Preprocess) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    data = archive.read(name, None)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise DataError(
                    f"image {name!r} is {image.width}x{image.height} pixels; at most {MAX_PIXELS} are decoded",
                    field="data",
                )
            converted = image.convert("L" if preprocess.channels == "L" else "RGB")
            converted = _resize(converted, preprocess.resize)
            converted = _crop(converted, preprocess.center_crop)
            pixels = np.asarray(converted, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"image {name!r} cannot be decoded ({exc})", field="data") from exc
    chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    if preprocess.channels == "BGR":
        chw = chw[::-1]
    mean = np.asarray(preprocess.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(preprocess.std, np.float32).reshape(-1, 1, 1)
    if mean.shape[0] not in (1, chw.shape[0]) or std.shape[0] not in (1, chw.shape[0]):
        raise DataError(
            f"spec.preprocess mean and std need 1 or {chw.shape[0]} values (one per channel)", field="preprocess"
        )
    return (chw - mean) / std


def _resize(image: Image.Image, size: int | list[int] | None) -> Image.Image:
    from PIL import Image

    if size is None:
        return image
    if isinstance(size, int):
        scale = size / min(image.width, image.height)
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    else:
        target = (size[1], size[0])
    return image.resize(target, Image.Resampling.BILINEAR)


def _crop(image: Image.Image, size: int | list[int] | None) -> Image.Image:
    if size is None:
        return image
    height, width = (size, size) if isinstance(size, int) else size
    if height > image.height or width > image.width:
        raise DataError(
            f"spec.preprocess.center_crop {height}x{width} is larger than the image ({image.height}x{image.width}); "
            "resize first",
            field="preprocess",
        )
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def _ignored(name: str) -> bool:
    """Folders and what archivers add on their own (macOS resource forks, hidden files)."""
    path = PurePosixPath(name)
    return name.endswith("/") or path.parts[:1] == ("__MACOSX",) or any(p.startswith(".") for p in path.parts)


def _image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _from_folders(files: list[str]) -> list[Member]:
    members = []
    for name in files:
        parts = PurePosixPath(name).parts
        if not _image(name):
            raise DataError(
                f"the image archive holds {name!r}; only JPEG/PNG images and {LABELS_CSV} are read", field="data"
            )
        if len(parts) == 2:
            members.append(Member(name, "train", parts[0]))
        elif len(parts) == 3 and parts[0] in ("train", *EVAL_FOLDERS):
            members.append(Member(name, "train" if parts[0] == "train" else "eval", parts[1]))
        else:
            raise DataError(
                f"image {name!r} is not in a class folder: lay images out as <class>/<image> or "
                "train/<class>/<image> and eval/<class>/<image>, or list them in labels.csv",
                field="data",
            )
    return members


def _from_csv(raw: bytes, files: set[str]) -> list[Member]:
    try:
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{LABELS_CSV} is not readable CSV ({exc})", field="data") from exc
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise DataError(f"{LABELS_CSV} needs the columns file and label (and optionally split)", field="data")
    members = []
    for line, row in enumerate(rows, start=2):
        name, label, split = row["file"] or "", row["label"] or "", (row.get("split") or "train").strip()
        if name not in files or not _image(name):
            raise DataError(
                f"{LABELS_CSV} line {line} names {name!r}, which is no JPEG/PNG in the archive", field="data"
            )
        if split not in ("train", *EVAL_FOLDERS) or not label:
            raise DataError(f"{LABELS_CSV} line {line}: split must be train or eval and label non-empty", field="data")
        members.append(Member(name, "train" if split == "train" else "eval", label.strip()))
    return members


class _Archive:
    """A zip or an uncompressed tar, read the same way."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        if zipfile.is_zipfile(stream):
            check_directory(stream, "data")
            self._zip = zipfile.ZipFile(stream)
            return
        stream.seek(0)
        try:
            self._tar = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115 - closed by __exit__
        except tarfile.TarError as exc:
            raise DataError(
                "data is neither an .npz, a .zip nor an uncompressed .tar (compressed tars are refused)",
                field="data",
            ) from exc

    def names(self) -> Iterator[str]:
        if self._zip is not None:
            yield from (info.filename for info in self._zip.infolist())
        else:
            assert self._tar is not None
            for count, info in enumerate(self._tar, start=1):
                if count > MAX_ENTRIES:
                    raise DataError(f"the image archive holds more than {MAX_ENTRIES} entries", field="data")
                if info.isfile():
                    yield info.name
                elif not info.isdir():
                    raise DataError(f"the image archive holds {info.name!r}, which is no regular file", field="data")

    def read(self, name: str, limit: int | None) -> bytes:
        if self._zip is not None:
            with self._zip.open(name) as member:
                data = member.read(-1 if limit is None else limit + 1)
        else:
            assert self._tar is not None
            extracted = self._tar.extractfile(name)
            if extracted is None:
                raise DataError(f"{name!r} is no regular file", field="data")
            data = extracted.read(-1 if limit is None else limit + 1)
        if limit is not None and len(data) > limit:
            raise DataError(f"{name!r} is larger than {limit} bytes", field="data")
        return data

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *_: object) -> None:
        for archive in (self._zip, self._tar):
            if archive is not None:
                archive.close()


def _open(stream: IO[bytes]) -> _Archive:
    stream.seek(0)
    return _Archive(stream)
