"""Project the measured pipeline scaling to full Amazon dumps on a named cluster (arithmetic, not a
measurement).

    .venv/bin/python benchmarks/scaling_projection.py benchmarks/results/pipeline_scaling.json

Input: the ``RESULT`` of ``benchmarks/pipeline_scaling.py`` (2 CPU cores; synthetic dumps). Each
stage is projected from the quantity that drives it, read from the same RESULT:

- etl: raw review lines (the size);
- profiles, features: profiles written (users + items: ``profiles.rows``);
- graphs: users + items (``profiles.rows``: one kNN row each);
- augment: interactions after the k-core (``etl.rows``).

The driver's peak memory is projected the same way from its own growth exponent e_d (0 when it
did not grow); a worker's is bounded by the stage's budget, so its figure at the largest size is
shown as it is. For stage s with quantity q, measured seconds t_lo at the smallest size and t_hi at the largest:
``e = log(t_hi / t_lo) / log(q_hi / q_lo)``, then on this machine
``t(q) = t_hi * (q / q_hi) ** max(e, 1)`` (never better than linear beyond what was measured), and on
the cluster ``t(q) * 2 / (cores * efficiency)`` for the CPU stages. Features are projected with the
real MiniLM: its per-row cost on this machine (``features.minilm_s_per_row``, one thread) times the
rows, divided by the GPU speed-up stated in ``GPU_MINILM_ROWS_PER_S``; LLM profile generation
(vLLM) from the stated tokens per second per GPU. Assumptions are constants below and printed.
Ends with ``RESULT {json}`` of flat figures ``<target>.<stage>.cluster_hours`` and ``<target>.total_cluster_hours``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

# Targets. Clothing 2018: the 5-core's counts (issue 11). Home and Kitchen 2023: its RAW counts as an
# upper bound (every rating kept, no k-core): 67.4M ratings, 23.2M users, 3.7M items.
TARGETS = {
    "clothing2018": {"reviews": 32_300_000, "interactions": 11_300_000, "profiles": 1_200_000 + 376_000},
    "home_kitchen2023_upper": {"reviews": 67_400_000, "interactions": 67_400_000, "profiles": 23_200_000 + 3_700_000},
}
# The named cluster (ray_cluster.yaml / infra/k8s): 32 CPU cores for the CPU stages (2 x m6i.4xlarge),
# 8 GPUs (8 x g5.2xlarge, NVIDIA A10G 24 GB) for profiles and features.
CLUSTER = {"cpu_cores": 32, "gpus": 8, "cpu_efficiency": 0.6}
# Stated assumptions (not measured here: no GPU was lent to this work):
GPU_MINILM_ROWS_PER_S = 2_000        # MiniLM-L6, 256-token profiles, one A10G (fp16, batch 256)
VLLM_TOKENS_PER_S_PER_GPU = 1_500    # an 8B instruct model on one A10G with vLLM, batched decoding
PROFILE_TOKENS = 256                 # profiles.max_new_tokens: the generated tokens per profile (upper bound)
DRIVER = {"etl": "reviews", "profiles": "profiles", "features": "profiles", "graphs": "profiles",
          "augment": "interactions"}


def quantities(result: dict, size: int) -> dict[str, float]:
    return {"reviews": float(size), "interactions": float(result[f"etl.rows@{size}"]),
            "profiles": float(result[f"profiles.rows@{size}"])}


def project(result: dict, stated: dict[str, float] | None = None) -> tuple[dict, list[str]]:
    """stated: stage -> growth exponent used instead of the measured one (printed as stated)."""
    stated = dict(stated or {})
    sizes = [int(s) for s in str(result["sizes"]).split(",")]
    lo, hi = sizes[0], sizes[-1]
    q_lo, q_hi = quantities(result, lo), quantities(result, hi)
    out: dict[str, float] = {}
    lines = [f"measured: {lo:,} -> {hi:,} reviews on {result.get('machine', '?')}; cluster: "
             f"{CLUSTER['cpu_cores']} CPU cores at efficiency {CLUSTER['cpu_efficiency']}, {CLUSTER['gpus']} GPUs", ""]
    for name, target in TARGETS.items():
        lines += [f"### {name}: {target['reviews']:,} reviews, {target['interactions']:,} interactions, "
                  f"{target['profiles']:,} profiles", "",
                  "| stage | driven by | e (measured) | this machine: t_hi x (q / q_hi)^max(e,1) | cluster | hours "
                  "| driver GiB: d_hi x (q / q_hi)^e_d | largest worker GiB (measured at the largest size) |",
                  "|---|---|---|---|---|---|---|---|"]
        total = 0.0
        for stage, qname in DRIVER.items():
            t_lo, t_hi = result[f"{stage}.seconds@{lo}"], result[f"{stage}.seconds@{hi}"]
            e = math.log(t_hi / t_lo) / math.log(q_hi[qname] / q_lo[qname]) if hi > lo else 1.0
            e_used = stated.get(stage, max(e, 1.0))
            ratio = target[qname] / q_hi[qname]
            here = t_hi * ratio ** e_used
            if stage == "features":
                per_row = result[f"features.minilm_s_per_row@{hi}"]
                gpu = target["profiles"] / (GPU_MINILM_ROWS_PER_S * CLUSTER["gpus"])
                arith = (f"MiniLM: {target['profiles']:,} rows x {per_row:.4f} s = {target['profiles'] * per_row:,.0f} s "
                         f"(one thread here)")
                cl, cl_arith = gpu, f"{target['profiles']:,} / ({GPU_MINILM_ROWS_PER_S:,}/s x {CLUSTER['gpus']} GPUs) = {gpu:,.0f} s"
            else:
                cl = here * 2 / (CLUSTER["cpu_cores"] * CLUSTER["cpu_efficiency"])
                arith = (f"{t_hi:,.0f} s x {ratio:.2f}^{e_used:.2f}{' (stated)' if stage in stated else ''} = "
                         f"{here:,.0f} s")
                cl_arith = f"{here:,.0f} x 2 / ({CLUSTER['cpu_cores']} x {CLUSTER['cpu_efficiency']}) = {cl:,.0f} s"
            total += cl
            d_lo, d_hi = result[f"{stage}.driver_peak_gib@{lo}"], result[f"{stage}.driver_peak_gib@{hi}"]
            e_d = math.log(d_hi / d_lo) / math.log(q_hi[qname] / q_lo[qname]) if hi > lo else 0.0
            driver = d_hi * ratio ** max(e_d, 0.0)
            worker = result[f"{stage}.worker_peak_gib@{hi}"]
            out[f"{name}.{stage}.driver_gib"] = round(driver, 2)
            out[f"{name}.{stage}.exponent"] = round(e, 3)
            out[f"{name}.{stage}.cluster_hours"] = round(cl / 3600, 3)
            lines.append(f"| {stage} | {qname} | {e:.2f} | {arith} | {cl_arith} | {cl / 3600:.2f} "
                         f"| {d_hi:.2f} x {ratio:.2f}^{max(e_d, 0.0):.2f} = {driver:.2f} | {worker:.2f} |")
        llm = target["profiles"] * PROFILE_TOKENS / (VLLM_TOKENS_PER_S_PER_GPU * CLUSTER["gpus"])
        out[f"{name}.profiles_vllm.cluster_hours"] = round(llm / 3600, 2)
        out[f"{name}.total_cluster_hours"] = round(total / 3600, 2)
        lines += ["", f"Total with template profiles: {total / 3600:.2f} h. LLM profiles (vLLM) instead of templates: "
                      f"{target['profiles']:,} x {PROFILE_TOKENS} tokens / ({VLLM_TOKENS_PER_S_PER_GPU:,} tokens/s x "
                      f"{CLUSTER['gpus']} GPUs) = {llm:,.0f} s = {llm / 3600:.1f} h more.", ""]
    return out, lines


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("result", help="a JSON file holding pipeline_scaling.py's RESULT object")
    ap.add_argument("--exponent", action="append", default=[], metavar="STAGE=E",
                    help="use growth exponent E for STAGE instead of the measured one (said in the table), e.g. "
                         "graphs=1.1 when the smallest size used the exact index and the larger ones HNSW")
    args = ap.parse_args(argv)
    result = json.loads(Path(args.result).read_text())
    stated = {k: float(v) for k, v in (x.split("=", 1) for x in args.exponent)}
    out, lines = project(result, stated)
    print("\n".join(lines))
    out.update({"gpu_minilm_rows_per_s": GPU_MINILM_ROWS_PER_S, "vllm_tokens_per_s_per_gpu": VLLM_TOKENS_PER_S_PER_GPU,
                "cluster_cpu_cores": CLUSTER["cpu_cores"], "cluster_gpus": CLUSTER["gpus"], "seed": result.get("seed"),
                "machine": result.get("machine"), "stated_exponents": ",".join(f"{k}={v}" for k, v in stated.items())})
    print("RESULT " + json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
