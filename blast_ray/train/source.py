"""Where a training run's inputs come from in the artifact store, and how they are built from it.

:func:`side_inputs` turns the committed upstream outputs (ETL interactions, features, graphs,
augmentation) into a :class:`~blast_ray.train.inputs.TrainInputs`; the train stage builds its
inputs with it on the driver, and every Ray Train worker builds its own from a
:class:`StoreInputs`: a few strings (store URI, dataset, (stage, fingerprint) of each upstream
output, the augment switches), so ``train_loop_config`` never carries the arrays and nothing of
the data goes through Ray's object store. The upstream artifacts modules (imported lazily) read
the Parquet files; no Ray is imported here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from blast_ray.train.inputs import TrainInputs

log = logging.getLogger("blast_ray.train")

# the upstream stages a training run reads, in the order they are loaded
INPUT_STAGES = ("etl", "features", "graphs", "augment")


@dataclass(frozen=True)
class AugmentUse:
    """How the augment output enters training (the ``augment`` config section's switches).

    enabled: H is read at all (``augment.enabled``); add_to_graph: H also enters the propagation
    graph A (``augment.add_to_graph``); restrict_negatives: negatives are drawn outside R + G
    (``augment.restrict_negatives``) instead of outside R."""

    enabled: bool = False
    add_to_graph: bool = False
    restrict_negatives: bool = False

    @classmethod
    def from_config(cls, augment_cfg: Any) -> "AugmentUse":
        return cls(bool(getattr(augment_cfg, "enabled", False)), bool(getattr(augment_cfg, "add_to_graph", False)),
                   bool(getattr(augment_cfg, "restrict_negatives", False)))


def side_inputs(outputs: Mapping[str, Any], data, augment: AugmentUse, model: str | None = None) -> TrainInputs:
    """``TrainInputs`` of ``data`` (the ETL interactions) plus the side inputs of the committed
    ``outputs`` present (stage -> StageOutput): features (name -> (rows, d) float32), the item and
    user graphs (a missing one is dropped with a WARNING), and the augmented pairs H when
    ``augment.enabled``. model: only what that model reads is loaded (``used_modalities``: freedom
    never loads the user graph or the user vectors, bpr/lightgcn no feature or graph); None: all."""
    from blast_ray.features.artifacts import feature_names, load_vectors
    from blast_ray.models.factory import used_modalities

    names = feature_names(outputs["features"]) if "features" in outputs else []
    wanted = (used_modalities(model, names, True, True) if model
              else {"features": names, "item_graph": True, "user_graph": True})
    inputs = TrainInputs(data)
    if wanted["features"]:
        inputs.features = {k: np.asarray(load_vectors(outputs["features"], k)[0], dtype=np.float32)
                           for k in wanted["features"]}
    if "graphs" in outputs:
        from blast_ray.graphs.artifacts import load_graph

        for kind in ("item", "user"):
            if not wanted[f"{kind}_graph"]:
                log.debug("train: %s does not read the %s graph; not loaded", model, kind)
                continue
            try:
                m = load_graph(outputs["graphs"], kind)
            except FileNotFoundError:
                why = (outputs["graphs"].manifest or {}).get("extra", {}).get(f"{kind}_graph", "")
                # switched off by the config (e.g. a tuned config without the user graph): said, not warned
                level = logging.INFO if str(why).startswith("disabled") else logging.WARNING
                log.log(level, "train: graphs output has no %s graph (%s); that branch is dropped", kind, why or "absent")
                continue
            setattr(inputs, f"{kind}_graph", m)
    if "augment" in outputs and augment.enabled:
        from blast_ray.augment.artifacts import load_augmentation

        aug = load_augmentation(outputs["augment"], data.n_users, data.n_items)
        inputs.extra_users, inputs.extra_items = np.asarray(aug.users), np.asarray(aug.items)
        inputs.extra_in_graph = augment.add_to_graph  # H also enters the propagation graph A
        if augment.restrict_negatives:
            inputs.neg_exclude = (data.train + aug.false_negatives).tocsr()
        log.debug("train: %d augmented pairs; negatives restricted: %s; in the graph A: %s", len(inputs.extra_users),
                  inputs.neg_exclude is not None, inputs.extra_in_graph)
    return inputs


@dataclass(frozen=True)
class StoreInputs:
    """A reference to a training run's inputs in the store, small enough to ship to every worker.

    store_root: the store URI (local folder or s3://...); dataset: the dataset name of the outputs;
    outputs: (stage, fingerprint) of each committed upstream output read (``etl`` first, then
    any of features, graphs, augment); augment: how H is used (:class:`AugmentUse`); model: the
    model trained, whose side inputs only are loaded (None: all; see :func:`side_inputs`)."""

    store_root: str
    dataset: str
    outputs: tuple[tuple[str, str], ...]
    augment: AugmentUse = AugmentUse()
    model: str | None = None

    @classmethod
    def from_outputs(cls, store, dataset: str, outputs: Mapping[str, Any], augment: AugmentUse,
                     model: str | None = None) -> "StoreInputs":
        """From the committed upstream ``outputs`` (stage -> StageOutput) of a stage context."""
        if "etl" not in outputs:
            raise ValueError("training inputs from the store need the committed 'etl' output")
        refs = tuple((s, str(outputs[s].fingerprint)) for s in INPUT_STAGES if s in outputs)
        return cls(str(store.root), str(dataset), refs, augment, model)

    def stage_outputs(self) -> dict[str, Any]:
        """stage -> StageOutput of each referenced output; ``FileNotFoundError`` (one line naming the
        output and the store) when one is not committed there (deleted since the driver read it)."""
        from blast_ray.store import ArtifactStore
        from blast_ray.store.manifest import StageOutput

        store = ArtifactStore(self.store_root)
        res = {}
        for stage, fp in self.outputs:
            out = StageOutput(store, self.dataset, stage, fp, None, {})
            if not out.done:
                raise FileNotFoundError(f"training input {stage} output {fp} of dataset {self.dataset} is not committed in "
                                        f"store {self.store_root}: rerun the pipeline with --stages including {stage}")
            res[stage] = out
        return res

    def load(self) -> TrainInputs:
        """Build the :class:`TrainInputs` from the store (what :func:`side_inputs` builds on the driver)."""
        from blast_ray.etl.artifacts import load_interactions

        outputs = self.stage_outputs()
        return side_inputs(outputs, load_interactions(outputs["etl"]), self.augment, self.model)
