"""Launcher kept for checkouts and ``ray job submit ... -- python -m jobs.pipeline``: the job's code
is ``blast_ray.jobs.pipeline`` (installed with the package; ``blast pipeline`` runs the same)."""

import sys

from blast_ray.jobs.pipeline import build_parser, main, run  # noqa: F401 - re-exported

if __name__ == "__main__":
    sys.exit(main())
