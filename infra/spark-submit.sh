#!/usr/bin/env bash
# Run the ETL stage on a real Spark cluster (standalone/YARN/K8s master) instead of local[*].
#   SPARK_MASTER=spark://host:7077 infra/spark-submit.sh configs/amazon-baby.yaml s3a://bucket/blast
# The store must be reachable by the executors (s3a:// needs hadoop-aws on the cluster's classpath;
# not available in CI, where ETL runs with the local master).
# The blast_ray package travels to the executors as a zip (--py-files) built for this run only, in
# its own mktemp folder removed on exit: two submits at once never overwrite each other's zip.
set -euo pipefail
CONFIG=${1:?usage: infra/spark-submit.sh CONFIG [STORE]}
STORE=${2:-}
MASTER=${SPARK_MASTER:?set SPARK_MASTER, e.g. spark://host:7077 or yarn}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")
if [[ -n "$STORE" && "$STORE" != *://* ]]; then
  mkdir -p "$STORE" && STORE=$(cd "$STORE" && pwd)
fi
cd "$ROOT"
PKG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/blast-ray-pkg.XXXXXX")
trap 'rm -rf "$PKG_DIR"' EXIT
PKG="$PKG_DIR/blast_ray.zip"
zip -qr "$PKG" blast_ray -x '*__pycache__*'
# not exec: the EXIT trap must run after spark-submit to remove this run's zip
spark-submit \
  --master "$MASTER" \
  --deploy-mode "${SPARK_DEPLOY_MODE:-client}" \
  --driver-memory "${SPARK_DRIVER_MEMORY:-8g}" \
  --executor-memory "${SPARK_EXECUTOR_MEMORY:-16g}" \
  --py-files "$PKG" \
  ${SPARK_EXTRA_ARGS:-} \
  spark/etl_job.py --config "$CONFIG" ${STORE:+--store "$STORE"} --set "etl.master=$MASTER"
