"""Fetch dataset files from public mirrors, verify SHA-256, write atomically, never re-fetch."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path


class DataFileError(RuntimeError):
    """A dataset file is missing, unreachable, truncated or not the canonical bytes."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, destination: Path, timeout: float) -> None:
    """Stream url into a temp file beside destination, then rename: no partial file is ever seen."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        os.replace(tmp_name, destination)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def fetch(
    file_name: str,
    directory: Path,
    sha256: str,
    mirrors: Sequence[str],
    timeout: float = 60.0,
) -> Path:
    """Return directory/file_name with verified contents, downloading it from the first mirror that works.

    A file already present with the right checksum is used as is. A present file with the wrong
    checksum is replaced by a verified download, and if none can be had, refused.
    """
    path = Path(directory) / file_name
    found = sha256_of(path) if path.exists() else None
    if found == sha256:
        return path
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + file_name
        staged = path.with_name(path.name + ".download")
        try:
            _download(url, staged, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', error)}")
            continue
        got = sha256_of(staged)
        if got != sha256:
            staged.unlink()
            failures.append(f"{url}: sha256 {got} (not the canonical file)")
            continue
        os.replace(staged, path)
        return path
    state = f"present but its sha256 is {found}" if found else "missing"
    tried = "; ".join(failures) or "no mirrors configured"
    raise DataFileError(
        f"{path} is {state}; expected sha256 {sha256}. Download failed ({tried}). "
        f"Put a verified copy of {file_name} at {path} (or point DROPTUNE_DATA_DIR / paths.data_dir "
        f"at a folder that has {Path(directory).name}/{file_name})."
    )
