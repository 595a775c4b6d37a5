#!/usr/bin/env bash
# Run the ETL stage on a real Spark cluster (standalone/YARN/K8s master) instead of local[*].
#   SPARK_MASTER=spark://host:7077 infra/spark-submit.sh configs/amazon-baby.yaml s3a://bucket/blast
# The store must be reachable by the executors (s3a:// needs hadoop-aws on the cluster's classpath;
# not available in CI, where ETL runs with the local master).
set -euo pipefail
CONFIG=${1:?usage: infra/spark-submit.sh CONFIG [STORE]}
STORE=${2:-}
MASTER=${SPARK_MASTER:?set SPARK_MASTER, e.g. spark://host:7077 or yarn}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
rm -f /tmp/blast_ray_pkg.zip && zip -qr /tmp/blast_ray_pkg.zip blast_ray
exec spark-submit \
  --master "$MASTER" \
  --deploy-mode "${SPARK_DEPLOY_MODE:-client}" \
  --driver-memory "${SPARK_DRIVER_MEMORY:-8g}" \
  --executor-memory "${SPARK_EXECUTOR_MEMORY:-16g}" \
  --py-files /tmp/blast_ray_pkg.zip \
  ${SPARK_EXTRA_ARGS:-} \
  spark/etl_job.py --config "$CONFIG" ${STORE:+--store "$STORE"} --set "etl.master=$MASTER"
