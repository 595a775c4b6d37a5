"""Launcher kept for checkouts and ``ray job submit ... -- python -m jobs.nightly``: the job's code
is ``blast_ray.jobs.nightly`` (installed with the package; ``blast nightly`` runs the same)."""

import sys

from blast_ray.jobs.nightly import (  # noqa: F401 - re-exported for callers of the old path
    NightlyConfig,
    build_parser,
    combine,
    ctx_etl,
    decide_promotion,
    id_space_change,
    inbox_files,
    main,
    run,
    run_nightly,
)

if __name__ == "__main__":
    sys.exit(main())
