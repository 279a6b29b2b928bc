"""The landing zone: files an outside system drops, read but never modified by the platform."""

from __future__ import annotations

import gzip
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

SUFFIXES = (".csv", ".parquet", ".jsonl")


class LandingFileError(ValueError):
    """A landed file that cannot be read; the message names the file."""


@dataclass(frozen=True)
class LandedFile:
    path: Path
    sha256: str


def _data_suffix(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return next((s for s in SUFFIXES if name.endswith(s)), None)


def list_landing_files(directory: Path) -> list[Path]:
    """Data files directly in ``directory`` (labels live in a subfolder), in name order."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and _data_suffix(p) is not None
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_landing_file(path: Path) -> pl.DataFrame:
    """Read a landed file with every column as text, so that typing is a validation rule."""
    suffix = _data_suffix(path)
    try:
        raw = path.read_bytes()
        if path.name.lower().endswith(".gz"):
            raw = gzip.decompress(raw)
        if suffix == ".csv":
            frame = pl.read_csv(io.BytesIO(raw), infer_schema=False)
        elif suffix == ".parquet":
            frame = pl.read_parquet(io.BytesIO(raw))
        elif suffix == ".jsonl":
            frame = pl.read_ndjson(io.BytesIO(raw), infer_schema_length=None)
        else:
            raise LandingFileError(f"{path}: unsupported file type")
    except LandingFileError:
        raise
    except Exception as exc:  # any parser error becomes one clear message naming the file
        raise LandingFileError(f"{path}: cannot be parsed ({type(exc).__name__}: {exc})") from exc
    return frame.select(pl.all().cast(pl.String))
