//! The pipeline engine: config, DAG, cache and lock file, executor.
