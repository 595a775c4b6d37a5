"""The scheduled retrain: new raw review files -> ETL over all files seen -> incremental profiles ->
(warm-started) training -> evaluation -> promote to ``latest`` only when not worse.

    python -m jobs.nightly --config beauty.yaml --inbox /data/inbox/beauty [--tolerance 0.005]
    python -m jobs.nightly --config beauty.yaml --inbox s3://bucket/inbox/beauty --store s3://bucket/blast
    blast nightly --config beauty.yaml --inbox /data/inbox/beauty      # the same, from an install

(``beauty.yaml``: any config whose dataset reads raw review files, e.g. ``format: amazon2018`` with
``paths.reviews``; tests/test_jobs_nightly.py writes such a config for All_Beauty_5.)

The inbox holds raw review files in the dataset's raw format (e.g. dated JSON lines
``2018-09-01.json``); they are concatenated in name order into one reviews file that the ETL reads.
State (which files, by content hash, went into the last successful run) lives in
``<store>/<dataset>/nightly/STATE.json``; with nothing new the job exits 0 and does nothing
(idempotent). A concurrent second run is refused by ``StoreLock``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blast_ray.config import ConfigError, PipelineConfig
from blast_ray.entry import add_config_args, add_verbosity_args, load_config_from_args, main_wrapper
from blast_ray.etl import artifacts as etl_artifacts
from blast_ray.runs import StoreLock, get_latest, load_run, promote
from blast_ray.store import ArtifactStore, StageOutput, layout

log = logging.getLogger("blast_ray.jobs.nightly")
PROG = "python -m jobs.nightly"


@dataclass
class NightlyConfig:
    """inbox: folder of raw review files; work_dir: local folder for the combined raw file;
    metric/tolerance: promote when new >= latest - tolerance (absolute)."""

    inbox: str
    work_dir: str = "./blast-data/nightly-work"
    metric: str = "valid.recall@20"
    tolerance: float = 0.0
    lock_ttl_s: float = 6 * 3600
    raw_role: str = "reviews"  # the dataset.paths role the combined file replaces

    def validate(self) -> "NightlyConfig":
        if self.inbox.startswith("s3://"):
            if not self.inbox[len("s3://"):].strip("/"):
                raise ConfigError(f"config key 'nightly.inbox': {self.inbox!r} needs a bucket, e.g. s3://bucket/inbox/beauty")
        elif "://" in self.inbox:
            raise ConfigError(f"config key 'nightly.inbox': {self.inbox!r}: only a local folder or s3://bucket/prefix")
        elif not os.path.isdir(self.inbox):
            raise ConfigError(f"config key 'nightly.inbox': {self.inbox} is not a folder")
        if self.tolerance < 0:
            raise ConfigError(f"config key 'nightly.tolerance': must be >= 0, got {self.tolerance}")
        if "." not in self.metric:
            raise ConfigError(f"config key 'nightly.metric': {self.metric!r} must be split.metric@k, e.g. valid.recall@20")
        return self


def decide_promotion(new: dict[str, Any], current: dict[str, Any] | None, metric: str, tolerance: float) -> tuple[bool, str]:
    """Promote when there is no current model, or ``new[metric] >= current[metric] - tolerance``."""
    if not isinstance(new.get(metric), (int, float)):
        return False, f"new run has no {metric}; keeping the current model"
    if not current or not isinstance(current.get(metric), (int, float)):
        return True, f"no promoted model with {metric} yet"
    diff = new[metric] - current[metric]
    if diff >= -tolerance:
        return True, f"{metric} {new[metric]:.4f} vs current {current[metric]:.4f} (diff {diff:+.4f}, tolerance {tolerance})"
    return False, f"{metric} {new[metric]:.4f} is worse than current {current[metric]:.4f} by {-diff:.4f} > tolerance {tolerance}"


def inbox_files(inbox: str) -> dict[str, str]:
    """name -> sha256 of every regular, non-hidden file in the inbox (sorted by name)."""
    out = {}
    for name in sorted(os.listdir(inbox)):
        p = os.path.join(inbox, name)
        if name.startswith(".") or not os.path.isfile(p):
            continue
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out[name] = h.hexdigest()
    return out


def fetch_inbox(inbox: str, work_dir: str, dataset: str) -> str:
    """The local folder to read the inbox from: ``inbox`` itself when local; for ``s3://bucket/prefix``
    its files (non-hidden, directly under the prefix) downloaded through the ArtifactStore into
    ``<work_dir>/<dataset>/inbox/`` (files gone from the bucket are removed there too), so hashing
    and combining read local files either way."""
    if not inbox.startswith("s3://"):
        return inbox
    src = ArtifactStore(inbox)
    local = os.path.join(os.path.abspath(work_dir), dataset, "inbox")
    os.makedirs(local, exist_ok=True)
    wanted = set()
    for name in src.list_dir():
        if name.startswith(".") or src.fs.get_file_info(src.path(name)).type.name != "File":
            continue
        wanted.add(name)
        with open(os.path.join(local, name + ".part"), "wb") as f:
            f.write(src.read_bytes(name))
        os.replace(os.path.join(local, name + ".part"), os.path.join(local, name))
    for name in os.listdir(local):
        if name not in wanted:
            os.unlink(os.path.join(local, name))
    log.info("nightly: %d inbox file(s) fetched from %s into %s", len(wanted), inbox, local)
    return local


def combine(inbox: str, names: list[str], target: str, chunk_bytes: int = 1 << 20) -> str:
    """Concatenate the inbox files (gzip or plain JSON lines) into one plain file the ETL reads.

    Streamed in 1 MiB chunks (memory O(chunk), whatever the file sizes); a file whose last line
    lacks its newline gets one, so lines of consecutive files never merge."""
    import gzip

    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target + ".tmp", "wb") as out:
        for name in names:
            p = os.path.join(inbox, name)
            opener = gzip.open if name.endswith(".gz") else open
            last = b""
            with opener(p, "rb") as f:
                while chunk := f.read(chunk_bytes):
                    out.write(chunk)
                    last = chunk[-1:]
            if last and last != b"\n":
                out.write(b"\n")
    os.replace(target + ".tmp", target)
    return target


def id_space_change(store: ArtifactStore, prev_etl_fingerprint: str | None, new_etl: StageOutput) -> str:
    """'' when every user_idx/item_idx of the ETL output ``prev_etl_fingerprint`` (same store and
    dataset) still maps to the same raw id in the ETL output ``new_etl`` (old ids keep their index;
    new ids may be appended after them, see ``etl.id_dictionary_from``), else why not (the first
    difference). Then the promoted model's embedding rows are the rows of the same users/items, and
    a warm start only appends rows (``blast_ray.train.warm_start.extend_rows``)."""
    if not prev_etl_fingerprint:
        return "the promoted run has no ETL output"
    for table, idx, raw in ((etl_artifacts.USERS, "user_idx", "user_id"), (etl_artifacts.ITEMS, "item_idx", "item_id")):
        try:
            prev = StageOutput.committed(store, new_etl.dataset, "etl", prev_etl_fingerprint)
            a = etl_artifacts.load_frame(prev, table, columns=[idx, raw]).sort_values(idx)
        except (FileNotFoundError, OSError) as e:
            return f"cannot read the promoted run's {table} table: {e}"
        b = etl_artifacts.load_frame(new_etl, table, columns=[idx, raw]).sort_values(idx)
        if len(a) > len(b):
            return f"{table}: {len(a)} before, {len(b)} now (the id dictionary shrank)"
        b = b.iloc[: len(a)]
        diff = (a[idx].to_numpy() != b[idx].to_numpy()) | (a[raw].astype(str).to_numpy() != b[raw].astype(str).to_numpy())
        if diff.any():
            return f"{table}: {int(diff.sum())} of {len(a)} old indices now map to other raw ids"
    return ""


def run_nightly(cfg: PipelineConfig, ncfg: NightlyConfig) -> dict[str, Any]:
    """One nightly pass; returns {"action": "noop"|"promoted"|"kept"|"failed", "reason": ..., ...}."""
    from blast_ray.pipeline import run_pipeline

    ncfg.validate()
    store = ArtifactStore(cfg.store)
    ds = cfg.dataset.name
    with StoreLock(store, ds, ttl_s=ncfg.lock_ttl_s):
        state_parts = layout.nightly_state_parts(ds)
        state = store.read_json(*state_parts) if store.exists(*state_parts) else {"files": {}}
        inbox = fetch_inbox(ncfg.inbox, ncfg.work_dir, ds)
        files = inbox_files(inbox)
        new = sorted(n for n, h in files.items() if state["files"].get(n) != h)
        if not new:
            log.info("nightly: no new raw files in %s since run %s; nothing to do", ncfg.inbox, state.get("run_id"))
            return {"action": "noop", "reason": "no new raw files", "run_id": state.get("run_id")}
        log.info("nightly: %d new raw file(s): %s", len(new), ", ".join(new))
        combined = combine(inbox, sorted(files), os.path.join(os.path.abspath(ncfg.work_dir), ds, "reviews.json"))
        cfg = cfg.updated(dataset={"paths": {**cfg.dataset.paths, ncfg.raw_role: combined}})
        latest = get_latest(store, ds)
        prev = load_run(store, ds, latest["run_id"]).get("stages", {}) if latest else {}
        if prev.get("etl", {}).get("uri") and not cfg.etl.id_dictionary_from:
            # Append-only ids: the promoted run's users/items tables are the dictionary this ETL extends
            # (old raw ids keep their index, new ones are appended), so its model can warm start.
            cfg = cfg.updated(etl={"id_dictionary_from": prev["etl"]["uri"]})
        etl = run_pipeline(cfg, stages=("etl",))
        if not etl.ok:
            return {"action": "failed", "reason": etl.error, "run_id": etl.run_id}
        # Warm start when every old id kept its index (new rows are appended by the warm start), else full retrain.
        warm_reason = "no promoted model yet: full training"
        if latest:
            changed = id_space_change(store, prev.get("etl", {}).get("fingerprint"), ctx_etl(store, etl))
            if not changed and prev.get("train", {}).get("uri"):
                # a copy: the caller's config object is left as it was
                cfg = cfg.updated(train={"warm_start_from": prev["train"]["uri"]})
                warm_reason = f"old ids keep their index since run {latest['run_id']}: warm start"
                log.info("nightly: warm start from %s", cfg.train.warm_start_from)
            else:
                warm_reason = f"full retrain: {changed or 'the promoted run has no train output'}"
                log.info("nightly: %s", warm_reason)
        res = run_pipeline(cfg)
        if not res.ok:
            return {"action": "failed", "reason": res.error, "run_id": res.run_id}
        from blast_ray.runs import flat_metrics

        metrics = flat_metrics(load_run(store, ds, res.run_id))
        ok, reason = decide_promotion(metrics, (latest or {}).get("metrics"), ncfg.metric, ncfg.tolerance)
        if ok:
            promote(store, ds, res.run_id, reason=f"nightly: {reason}")
        store.write_json({"files": files, "run_id": res.run_id, "promoted": ok, "reason": reason,
                          "warm_start_from": cfg.train.warm_start_from, "warm_start_reason": warm_reason},
                         *state_parts)
        log.info("nightly: %s %s (%s)", "promoted" if ok else "kept the current model; not promoted", res.run_id, reason)
        return {"action": "promoted" if ok else "kept", "reason": reason, "run_id": res.run_id, "new_files": new,
                "warm_start_from": cfg.train.warm_start_from, "warm_start_reason": warm_reason, "status": res.status,
                "metrics": metrics}


def ctx_etl(store: ArtifactStore, etl_result):
    """The committed ETL StageOutput of a PipelineResult that ran (or skipped) only the etl stage."""
    m = etl_result.manifests["etl"]
    return StageOutput.committed(store, m["dataset"], "etl", m["fingerprint"])


def add_nightly_args(p: argparse.ArgumentParser) -> None:
    """The job's arguments (also those of ``blast nightly``)."""
    add_config_args(p)
    add_verbosity_args(p)
    p.add_argument("--inbox", required=True, help="folder of raw review files (dataset's raw format): a local "
                   "folder or s3://bucket/prefix (downloaded into --work-dir)")
    p.add_argument("--work-dir", default="./blast-data/nightly-work", help="local folder for the combined raw file")
    p.add_argument("--tolerance", type=float, default=0.0, help="promote when new >= current - tolerance")
    p.add_argument("--metric", default="valid.recall@20", help="the promotion metric, split.metric@k")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="scheduled BLAST retrain: new raw files -> "
                                "incremental pipeline -> promote to latest only when not worse")
    add_nightly_args(p)
    return p


def run(args: argparse.Namespace, prog: str = PROG) -> int:
    """The job body: 0 for noop/promoted/kept, 1 when the pipeline failed (LockHeld: 1 too)."""
    cfg = load_config_from_args(args)
    out = run_nightly(cfg, NightlyConfig(args.inbox, args.work_dir, args.metric, args.tolerance))
    print(f"{prog}: {out['action']}: {out['reason']} (run {out.get('run_id')})")
    return 0 if out["action"] != "failed" else 1


def main(argv: list[str] | None = None) -> int:
    return main_wrapper(run, build_parser(), argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
