"""The batch jobs as importable code (installed with the package).

``blast_ray.jobs.pipeline`` (the whole DAG as one Ray job), ``blast_ray.jobs.nightly`` (the
scheduled retrain) and ``blast_ray.jobs.etl`` (the ETL as a Spark application). The repository's
top-level ``jobs/`` and ``spark/`` folders keep thin launchers (``python -m jobs.pipeline``,
``spark-submit spark/etl_job.py``) so the commands in ``infra/`` work from a checkout; an install
reaches the same code as ``blast pipeline ...`` and ``blast nightly ...``.
"""
