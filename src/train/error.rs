//! Errors of the training machinery: bad configuration or data, objective failures, checkpoint I/O.

use std::path::PathBuf;

/// Error type of an [`Objective`](super::Objective): any error of the model / inference code.
pub type ObjectiveError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while setting up, running, saving or resuming training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A training setting is out of range; `field` names the `TrainConfig` field.
    #[error("training config: `{field}` {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },

    /// The training data is unusable; `field` names the offending array or setting.
    #[error("training data: `{field}` {problem}")]
    Data {
        field: &'static str,
        problem: String,
    },

    /// The parameter vector does not match the objective's layout.
    #[error("parameters: {problem}")]
    Params { problem: String },

    /// The objective returned an error (not a NaN: NaN losses end the run as `Diverged`).
    #[error("objective failed at epoch {epoch}, batch {batch}: {source}")]
    Objective {
        epoch: usize,
        batch: usize,
        #[source]
        source: ObjectiveError,
    },

    /// HDF5 failure while reading or writing a checkpoint; `path` names the file and `object`
    /// the dataset / attribute inside it.
    #[error("checkpoint {path}: {object}: {source}")]
    Hdf5 {
        path: PathBuf,
        object: String,
        #[source]
        source: hdf5::Error,
    },

    /// Filesystem failure around a checkpoint (temporary file, rename, missing file).
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The checkpoint is readable but its content is inconsistent (wrong shape, missing block,
    /// unparsable config); `object` names the HDF5 dataset / attribute.
    #[error("checkpoint {path}: {object}: {problem}")]
    Checkpoint {
        path: PathBuf,
        object: String,
        problem: String,
    },
}

impl TrainError {
    pub(crate) fn config(field: &'static str, problem: impl Into<String>) -> Self {
        Self::Config {
            field,
            problem: problem.into(),
        }
    }

    pub(crate) fn data(field: &'static str, problem: impl Into<String>) -> Self {
        Self::Data {
            field,
            problem: problem.into(),
        }
    }
}
