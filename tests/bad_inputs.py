"""The bad-input cases of docs/RELIABILITY.md: id -> (kind, what, argv, env, files).

``argv`` may hold ``{tmp}`` (a fresh folder), ``{cfg}`` (a valid ml-100k smoke config in it) and
``{port}`` (a local port nothing listens on); ``files`` maps names under ``{tmp}`` to contents.
tests/test_errors.py::test_bad_input_table runs each through ``blast_ray.cli.main`` and checks the
exit code and the message prefix written in the document's table.
"""

NO_AWS = {"AWS_ENDPOINT_URL": None, "AWS_ENDPOINT_URL_S3": None, "AWS_ACCESS_KEY_ID": None,
          "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None}

CASES = {
    "config-missing": ("config", "config file does not exist", ["run", "--config", "{tmp}/nope.yaml"], {}, {}),
    "config-yaml-syntax": ("config", "YAML syntax error", ["config", "validate", "--config", "{tmp}/bad.yaml"], {}, {"bad.yaml": "dataset: [name\n"}),
    "config-empty": ("config", "empty YAML file", ["config", "validate", "--config", "{tmp}/empty.yaml"], {}, {"empty.yaml": ""}),
    "config-no-format": ("config", "dataset without a format", ["config", "validate", "--config", "{tmp}/nof.yaml"], {}, {"nof.yaml": "dataset: {name: x}\n"}),
    "config-unknown-key": ("config", "misspelt key", ["config", "validate", "--config", "{cfg}", "--set", "train.epochz=3"], {}, {}),
    "config-unknown-section": ("config", "unknown section", ["config", "validate", "--config", "{cfg}", "--set", "trian.epochs=3"], {}, {}),
    "config-out-of-range": ("config", "value out of range", ["config", "validate", "--config", "{cfg}", "--set", "train.epochs=0"], {}, {}),
    "config-bad-choice": ("config", "unknown choice", ["config", "validate", "--config", "{cfg}", "--set", "train.model=foo"], {}, {}),
    "config-wrong-type": ("config", "text for a number", ["config", "validate", "--config", "{cfg}", "--set", "train.lr=fast"], {}, {}),
    "config-split": ("config", "split fractions not summing to 1", ["config", "validate", "--config", "{cfg}", "--set", "etl.split=0.5,0.5,0.5"], {}, {}),
    "config-select-metric": ("config", "select_metric K not in ks", ["config", "validate", "--config", "{cfg}", "--set", "evaluate.select_metric=recall@7"], {}, {}),
    "config-http-endpoint": ("config", "http engine without endpoint", ["config", "validate", "--config", "{cfg}", "--set", "profiles.engine=http"], {}, {}),
    "config-dataset-dotdot": ("config", "dataset name `..`", ["config", "validate", "--config", "{cfg}", "--set", "dataset.name=.."], {}, {}),
    "config-dataset-slash": ("config", "dataset name with `/`", ["config", "validate", "--config", "{cfg}", "--set", "dataset.name=a/b"], {}, {}),
    "cli-set-syntax": ("CLI", "`--set` without `=`", ["config", "validate", "--config", "{cfg}", "--set", "train.epochs"], {}, {}),
    "cli-unknown-stage": ("CLI", "unknown stage name", ["run", "--config", "{cfg}", "--stages", "etl,foo", "--dry-run"], {}, {}),
    "cli-unknown-command": ("CLI", "unknown sub-command", ["frobnicate"], {}, {}),
    "cli-runs-no-store": ("CLI", "`runs` without a store", ["runs", "list"], {}, {}),
    "cli-run-id-hostile": ("CLI", "hostile run id", ["runs", "show", "..", "--store", "{tmp}/s", "--dataset", "ml-100k"], {}, {}),
    "cli-run-id-unknown": ("CLI", "unknown run id", ["runs", "show", "20260101-000000-aaaaaa", "--store", "{tmp}/s", "--dataset", "ml-100k"], {}, {}),
    "cli-nightly-inbox-missing": ("CLI", "nightly inbox not a folder", ["nightly", "--config", "{cfg}", "--inbox", "{tmp}/none"], {}, {}),
    "cli-nightly-inbox-scheme": ("CLI", "nightly inbox gs://", ["nightly", "--config", "{cfg}", "--inbox", "gs://b/in"], {}, {}),
    "cli-nightly-tolerance": ("CLI", "negative tolerance", ["nightly", "--config", "{cfg}", "--inbox", "{tmp}", "--tolerance", "-1"], {}, {}),
    "raw-missing-file": ("raw data", "dataset file missing", ["etl", "--config", "{cfg}", "--set", "dataset.paths.inter={tmp}/gone.inter"], {}, {}),
    "store-scheme": ("store", "unsupported store scheme", ["runs", "list", "--store", "ftp://host/x", "--dataset", "ml-100k"], {}, {}),
    "store-s3-no-bucket": ("store", "`s3://` without a bucket", ["runs", "list", "--store", "s3://", "--dataset", "ml-100k"], {}, {}),
    "network-s3-no-credentials": ("network", "S3 store, no credentials or endpoint", ["runs", "list", "--store", "s3://bucket/x", "--dataset", "ml-100k"], NO_AWS, {}),
    "network-s3-endpoint-down": ("network", "S3 endpoint not listening", ["runs", "list", "--store", "s3://bucket/x", "--dataset", "ml-100k"],
                                 {**NO_AWS, "AWS_ENDPOINT_URL": "http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}, {}),
}
