"""Images on disk -> float32 arrays: an image folder (png/jpg, recursive) or a .npy/.npz file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def list_image_files(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by path."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path, size: tuple[int, int] | None, channels: int = 3) -> np.ndarray:
    """One image as float32 (H, W, channels) in [0, 1], resized (bilinear) to ``size`` = (H, W).

    Raises ValueError naming the file if it cannot be decoded (corrupt, truncated, empty).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode image {path}: {err}") from err
    return arr if channels == 3 else arr[..., None]


def load_images(
    source: str | Path, size: tuple[int, int] | None = None, channels: int = 3
) -> tuple[np.ndarray, list[str]]:
    """Load ``source`` as (N, H, W, C) float32 with one id per image.

    A folder: every image under it (ids are relative paths), scaled to [0, 1] and resized to
    ``size``. A ``.npy`` file: the array as is (ids "0", "1", ...). A ``.npz``: its ``images`` (or
    only) array, and its ``ids`` if present.
    """
    src = Path(source)
    if src.is_dir():
        files = list_image_files(src)
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {src}")
        arrays = [read_image(f, size, channels) for f in files]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"images under {src} have different sizes {shapes}; pass a size")
        return np.stack(arrays), [str(f.relative_to(src)) for f in files]
    if src.suffix == ".npy":
        x = np.load(src, allow_pickle=False)
        return x.astype(np.float32, copy=False), [str(i) for i in range(len(x))]
    if src.suffix == ".npz":
        with np.load(src, allow_pickle=False) as data:
            key = "images" if "images" in data else None
            if key is None and len(data.files) != 1:
                raise ValueError(f"{src} holds {data.files}; expected an 'images' array")
            x = data[key or data.files[0]].astype(np.float32, copy=False)
            ids = [str(i) for i in data["ids"]] if "ids" in data else None
        return x, ids or [str(i) for i in range(len(x))]
    if not src.exists():
        raise FileNotFoundError(f"no such file or folder: {src}")
    raise ValueError(f"unsupported image source {src}: expected a folder, .npy or .npz")
