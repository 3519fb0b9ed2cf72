//! The project's exchange format for observed sequences: an HDF5 file with dataset `x`
//! (n_sequences, dim_x, T), optional `u` (n_sequences, dim_u, T), and string attributes
//! (`data_source`, provenance). Readable by h5py: `h5py.File(p)["x"][...]`.

use std::path::{Path, PathBuf};

use crate::model::Sequences;

/// Errors reading or writing a sequences file; each names the file and the dataset.
#[derive(Debug, thiserror::Error)]
pub enum SequencesIoError {
    /// HDF5 library error at a path inside the file.
    #[error("{file}: {object}: {source}")]
    Hdf5 {
        /// File.
        file: PathBuf,
        /// Dataset or attribute.
        object: String,
        /// Library error.
        source: hdf5::Error,
    },
    /// Wrong shape, NaN, or a missing dataset.
    #[error("{file}: {object}: {message}")]
    Invalid {
        /// File.
        file: PathBuf,
        /// Dataset or attribute.
        object: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Filesystem error.
    #[error("{file}: {source}")]
    Io {
        /// File.
        file: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
}

fn h5<T>(file: &Path, object: &str, r: hdf5::Result<T>) -> Result<T, SequencesIoError> {
    r.map_err(|source| SequencesIoError::Hdf5 {
        file: file.to_path_buf(),
        object: object.to_string(),
        source,
    })
}

/// Check that every value is finite; the error names the sequence, channel and time index.
pub fn check_finite(
    file: &Path,
    object: &str,
    data: &[f64],
    shape: (usize, usize, usize),
) -> Result<(), SequencesIoError> {
    if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
        let (_, d, t) = shape;
        return Err(SequencesIoError::Invalid {
            file: file.to_path_buf(),
            object: object.to_string(),
            message: format!(
                "value {} at [sequence {}, channel {}, time {}] (hint: interpolate or drop \
                 missing samples before fitting)",
                data[pos],
                pos / (d * t),
                (pos / t) % d,
                pos % t
            ),
        });
    }
    Ok(())
}

/// An extra dataset stored beside `x` (binned behaviour, held-out neurons, trial labels).
#[derive(Debug, Clone, PartialEq)]
pub enum ExtraDataset {
    /// Floats with a shape.
    Float {
        /// Shape.
        shape: Vec<usize>,
        /// Values, row-major.
        data: Vec<f64>,
    },
    /// Integers (1-D).
    Int(Vec<i64>),
    /// Text (1-D).
    Text(Vec<String>),
}

/// Write `seq` (as f64) and string attributes to `path` atomically (temp file + rename).
pub fn write_sequences(
    path: &Path,
    seq: &Sequences<f64>,
    attrs: &[(&str, String)],
) -> Result<(), SequencesIoError> {
    write_sequences_with(path, seq, attrs, &[])
}

/// [`write_sequences`] plus extra named datasets, all in one atomic write.
pub fn write_sequences_with(
    path: &Path,
    seq: &Sequences<f64>,
    attrs: &[(&str, String)],
    extra: &[(&str, ExtraDataset)],
) -> Result<(), SequencesIoError> {
    let tmp = path.with_extension("h5.tmp");
    {
        let f = h5(path, "/", hdf5::File::create(&tmp))?;
        let x = h5(
            path,
            "x",
            f.new_dataset::<f64>()
                .shape([seq.n_sequences, seq.dim_x, seq.n_time])
                .create("x"),
        )?;
        h5(path, "x", x.write_raw(&seq.x))?;
        if seq.dim_u > 0 {
            let u = h5(
                path,
                "u",
                f.new_dataset::<f64>()
                    .shape([seq.n_sequences, seq.dim_u, seq.n_time])
                    .create("u"),
            )?;
            h5(path, "u", u.write_raw(&seq.u))?;
        }
        for (name, d) in extra {
            match d {
                ExtraDataset::Float { shape, data } => {
                    let ds = h5(
                        path,
                        name,
                        f.new_dataset::<f64>().shape(shape.as_slice()).create(*name),
                    )?;
                    if !data.is_empty() {
                        h5(path, name, ds.write_raw(data))?;
                    }
                }
                ExtraDataset::Int(v) => {
                    let ds = h5(
                        path,
                        name,
                        f.new_dataset::<i64>().shape([v.len()]).create(*name),
                    )?;
                    h5(path, name, ds.write_raw(v))?;
                }
                ExtraDataset::Text(v) => {
                    let vals: Vec<hdf5::types::VarLenUnicode> = v
                        .iter()
                        .map(|s| s.replace('\0', "").parse().unwrap_or_default())
                        .collect();
                    let ds = h5(
                        path,
                        name,
                        f.new_dataset::<hdf5::types::VarLenUnicode>()
                            .shape([v.len()])
                            .create(*name),
                    )?;
                    h5(path, name, ds.write_raw(&vals))?;
                }
            }
        }
        for (name, value) in attrs {
            let v: hdf5::types::VarLenUnicode =
                value.parse().map_err(|_| SequencesIoError::Invalid {
                    file: path.to_path_buf(),
                    object: (*name).to_string(),
                    message: "attribute text contains a NUL byte".into(),
                })?;
            let a = h5(
                path,
                name,
                f.new_attr::<hdf5::types::VarLenUnicode>()
                    .shape(())
                    .create(*name),
            )?;
            h5(path, name, a.write_scalar(&v))?;
        }
    }
    std::fs::rename(&tmp, path).map_err(|source| SequencesIoError::Io {
        file: path.to_path_buf(),
        source,
    })
}

/// Read a string attribute of the file root, if present.
pub fn read_attr(path: &Path, name: &str) -> Result<Option<String>, SequencesIoError> {
    let f = h5(path, "/", hdf5::File::open(path))?;
    if !f
        .attr_names()
        .map(|n| n.iter().any(|a| a == name))
        .unwrap_or(false)
    {
        return Ok(None);
    }
    let a = h5(path, name, f.attr(name))?;
    let v: hdf5::types::VarLenUnicode = h5(path, name, a.read_scalar())?;
    Ok(Some(v.as_str().to_string()))
}

/// A sequences file opened and its shapes checked, before any values are read.
struct Opened {
    x: hdf5::Dataset,
    /// `u` and its dim_u, when the file has inputs.
    u: Option<(hdf5::Dataset, usize)>,
    /// (n_sequences, dim_x, T).
    shape: (usize, usize, usize),
}

/// Open `path` and check the shapes of `x` (3-D (n, dim_x, T) or 2-D (dim_x, T)) and of `u`
/// against it.
fn open_checked(path: &Path) -> Result<Opened, SequencesIoError> {
    if !path.is_file() {
        return Err(SequencesIoError::Io {
            file: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let f = hdf5::File::open(path).map_err(|e| SequencesIoError::Invalid {
        file: path.to_path_buf(),
        object: "/".into(),
        message: format!(
            "cannot open as HDF5 ({e}); expected an HDF5 file with dataset `x` \
             (n_sequences, dim_x, T), or a .npy array"
        ),
    })?;
    let xds = f.dataset("x").map_err(|_| SequencesIoError::Invalid {
        file: path.to_path_buf(),
        object: "x".into(),
        message: "no dataset `x` (expected shape (n_sequences, dim_x, T) or (dim_x, T))".into(),
    })?;
    let shape = xds.shape();
    let (n, d, t) = match shape.as_slice() {
        [n, d, t] => (*n, *d, *t),
        [d, t] => (1, *d, *t),
        s => {
            return Err(SequencesIoError::Invalid {
                file: path.to_path_buf(),
                object: "x".into(),
                message: format!("shape {s:?}: expected (n_sequences, dim_x, T) or (dim_x, T)"),
            })
        }
    };
    if n == 0 || d == 0 || t == 0 {
        return Err(SequencesIoError::Invalid {
            file: path.to_path_buf(),
            object: "x".into(),
            message: format!("empty shape {shape:?}"),
        });
    }
    let u = match f.dataset("u") {
        Ok(uds) => {
            let us = uds.shape();
            let du = match us.as_slice() {
                [un, du, ut] if *un == n && *ut == t => *du,
                [du, ut] if n == 1 && *ut == t => *du,
                s => {
                    return Err(SequencesIoError::Invalid {
                        file: path.to_path_buf(),
                        object: "u".into(),
                        message: format!(
                            "shape {s:?} does not match x {shape:?} (expected ({n}, dim_u, {t}))"
                        ),
                    })
                }
            };
            Some((uds, du))
        }
        Err(_) => None,
    };
    Ok(Opened {
        x: xds,
        u,
        shape: (n, d, t),
    })
}

/// The (dim_x, dim_u) of the sequences file `path`, from its shapes alone (no values read).
pub fn read_dims(path: &Path) -> Result<(usize, usize), SequencesIoError> {
    let opened = open_checked(path)?;
    Ok((opened.shape.1, opened.u.map_or(0, |(_, du)| du)))
}

/// Read `x` (and `u` when present) from `path`. `x` may be 3-D (n, dim_x, T) or 2-D
/// (dim_x, T) for one recording. NaN/Inf is an error naming the position.
pub fn read_sequences(path: &Path) -> Result<Sequences<f64>, SequencesIoError> {
    let opened = open_checked(path)?;
    let (n, d, t) = opened.shape;
    let x: Vec<f64> = h5(path, "x", opened.x.read_raw::<f64>())?;
    check_finite(path, "x", &x, (n, d, t))?;
    let (dim_u, u) = match opened.u {
        Some((uds, du)) => {
            let u: Vec<f64> = h5(path, "u", uds.read_raw::<f64>())?;
            check_finite(path, "u", &u, (n, du, t))?;
            (du, u)
        }
        None => (0, Vec::new()),
    };
    Ok(Sequences {
        n_sequences: n,
        dim_x: d,
        dim_u,
        n_time: t,
        x,
        u,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_nan_error() {
        let dir = tempfile_dir();
        let p = dir.join("s.h5");
        let seq = Sequences {
            n_sequences: 2,
            dim_x: 3,
            dim_u: 1,
            n_time: 4,
            x: (0..24).map(|i| i as f64).collect(),
            u: (0..8).map(|i| -(i as f64)).collect(),
        };
        write_sequences(&p, &seq, &[("data_source", "simulated".into())]).unwrap();
        let back = read_sequences(&p).unwrap();
        assert_eq!(back, seq);
        assert_eq!(read_dims(&p).unwrap(), (3, 1));
        assert_eq!(
            read_attr(&p, "data_source").unwrap().as_deref(),
            Some("simulated")
        );
        assert_eq!(read_attr(&p, "nope").unwrap(), None);
        let mut bad = seq.clone();
        bad.x[13] = f64::NAN;
        write_sequences(&p, &bad, &[]).unwrap();
        let e = read_sequences(&p).unwrap_err().to_string();
        assert!(e.contains("sequence 1, channel 0, time 1"), "{e}");
        std::fs::write(&p, b"not hdf5").unwrap();
        assert!(read_sequences(&p).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("lrsmc-seqio-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
