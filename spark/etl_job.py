"""Launcher for ``spark-submit spark/etl_job.py ...`` (see infra/spark-submit.sh): the application's
code is ``blast_ray.jobs.etl``, shipped to the cluster in the blast_ray zip."""

import sys

from blast_ray.jobs.etl import build_parser, main, run  # noqa: F401 - re-exported

if __name__ == "__main__":
    sys.exit(main())
