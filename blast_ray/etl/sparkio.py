"""Spark session and line-level readers shared by the ETL readers.

Everything here stays in the JVM: no Python UDFs, no ``collect()`` of data rows. The only values
brought to the driver are per-partition row counts (one small row per partition) used to turn
``monotonically_increasing_id`` into exact, gap-free line numbers / dense indices.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("blast_ray.etl")


LOG4J2_PROPERTIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")


def get_spark(master: str | None = "local[*]", driver_memory: str = "4g", shuffle_partitions: int = 8):
    """The active SparkSession, or a new one configured for the ETL.

    Under ``spark-submit`` (``PYSPARK_GATEWAY_PORT`` is set) the master and memory given on the
    spark-submit command line win; otherwise ``master`` (``etl.master``) is used.

    >>> spark = get_spark("local[2]", shuffle_partitions=4)  # doctest: +SKIP
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        _accumulator_errors_to_log(active)
        return active
    os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYSPARK_PYTHON", __import__("sys").executable))
    b = SparkSession.builder.appName("blast-etl")
    if master and "PYSPARK_GATEWAY_PORT" not in os.environ:
        b = b.master(master).config("spark.driver.memory", driver_memory)
    b = (
        b.config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Dlog4j2.level=ERROR" + (
            f" -Dlog4j2.configurationFile=file:{LOG4J2_PROPERTIES}" if os.path.isfile(LOG4J2_PROPERTIES) else ""))
    )
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    _accumulator_errors_to_log(spark)
    return spark


def _accumulator_errors_to_log(spark) -> None:
    """Send the accumulator server's connection errors to our log instead of stderr.

    pyspark's accumulator server is a ``socketserver``; when the JVM dies under it (a SIGTERM to
    the whole process group reaches the JVM with the driver) its handler thread ends in
    ``EOFError`` and ``socketserver.BaseServer.handle_error`` prints a traceback straight to
    stderr, past every logging filter. The driver already reports the signal in one line; the
    traceback belongs in ``run.log`` (DEBUG; ``-v`` shows it)."""
    server = getattr(spark.sparkContext, "_accumulatorServer", None)
    if server is None or getattr(server, "_blast_quiet", False):
        return

    def handle_error(request, client_address) -> None:
        log.debug("pyspark accumulator server: the connection from %s ended with an error (the JVM went away?)",
                  client_address, exc_info=True)

    server.handle_error = handle_error
    server._blast_quiet = True


def with_row_index(df, col: str, start: int = 0):
    """Add a gap-free index column following the DataFrame's current partition order.

    ``monotonically_increasing_id`` is ``partition_id << 33 | row_in_partition``; adding the
    number of rows of all earlier partitions gives the exact position. The frame is checkpointed
    first so both passes see the same partitioning (e.g. after a range-partitioned sort).
    """
    from pyspark.sql import functions as F

    spark = df.sparkSession
    df = df.withColumn("_pid", F.spark_partition_id()).withColumn("_mid", F.monotonically_increasing_id())
    df = df.localCheckpoint(eager=True)
    counts = sorted((r["_pid"], r["count"]) for r in df.groupBy("_pid").count().collect())
    offsets, acc = [], start
    for pid, n in counts:
        offsets.append((pid, acc))
        acc += n
    if not offsets:
        offsets = [(0, start)]
    off = spark.createDataFrame(offsets, "_pid int, _off long")
    return (
        df.join(F.broadcast(off), "_pid")
        .withColumn(col, F.col("_off") + F.col("_mid") - F.shiftleft(F.col("_pid").cast("long"), 33))
        .drop("_pid", "_mid", "_off")
    )


def check_path(path: str, role: str) -> str:
    """Fail fast with one line when an input is missing."""
    if "://" not in path and not Path(path).exists():
        raise FileNotFoundError(f"dataset.paths.{role}: {path} does not exist")
    return path


def read_lines(spark, path: str, role: str, encoding: str | None = None):
    """One file as (source, line, raw): 1-based line numbers in file order; .gz read transparently.

    ``encoding`` (e.g. ISO-8859-1 for GroupLens u.item) decodes through the CSV reader with a
    separator that cannot occur, so each line stays one column.
    """
    from pyspark.sql import functions as F

    check_path(path, role)
    if encoding:
        df = (
            spark.read.option("sep", "\u0001").option("encoding", encoding).option("quote", "")
            .option("header", "false").schema("raw string").csv(path)
        )
        df = df.fillna({"raw": ""})
    else:
        df = spark.read.text(path).withColumnRenamed("value", "raw")
    df = with_row_index(df, "line", start=1)
    if is_gzip(path):
        # gzip is not splittable: Spark reads the whole file in one partition (one task). Once the
        # lines are numbered in file order, spread them so parsing, dedup and k-core run in parallel.
        df = df.repartition(gzip_partitions(spark, path))
    return df.select(F.lit(os.path.basename(path)).alias("source"), "line", "raw")


def is_gzip(path: str) -> bool:
    """A ``.gz`` file, or a folder holding one (Spark reads each such file as one partition)."""
    p = Path(path)
    if "://" not in path and p.is_dir():
        return any(x.name.endswith(".gz") for x in p.rglob("*") if x.is_file())
    return path.endswith(".gz")


# compressed bytes per partition of lines read from gzip: review JSON inflates about 4-5x, so a
# task holds ~150 MB of text. Sized from the input, not the core count: with 2 partitions on a
# 2-core machine each task of a 10M-review dump (1.35 GB .gz) held ~3 GB of lines and its sort
# spills ran the 4g heap out of memory
GZIP_PARTITION_BYTES = 32 * 2**20


def gzip_partitions(spark, path: str) -> int:
    """Partitions for lines read from gzip: one per ``GZIP_PARTITION_BYTES`` of compressed input,
    at least the cluster's default parallelism (and at least 2). ``path`` (a file or a folder) is
    measured through Hadoop's file system (local, ``hdfs://``, ``s3a://`` alike)."""
    floor = max(2, int(spark.sparkContext.defaultParallelism))
    jvm = spark.sparkContext._jvm
    jpath = jvm.org.apache.hadoop.fs.Path(path)
    size = jpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).getContentSummary(jpath).getLength()
    return max(floor, -(-int(size) // GZIP_PARTITION_BYTES))
