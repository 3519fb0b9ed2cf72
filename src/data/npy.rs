//! NPY files (NumPy's `.npy` format, versions 1–3): read any little/big-endian float or integer
//! array into `f64`, write `f32`/`f64` arrays. Hand-written (the format is a short text header
//! plus raw data) so there is no dependency on ndarray.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Errors reading or writing an NPY file; each names the file and says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be opened/read/written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Not an NPY file or a header we cannot parse.
    #[error("{path}: not a valid .npy file: {message} (hint: write it with numpy.save)")]
    Format {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The dtype is not a real number type.
    #[error("{path}: unsupported dtype `{descr}` (hint: save a float32/float64/int array)")]
    Dtype {
        /// File.
        path: PathBuf,
        /// The header's `descr`.
        descr: String,
    },
}

/// A dense array read from NPY, in C (row-major) order, converted to `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Shape as stored.
    pub shape: Vec<usize>,
    /// Values in row-major order (Fortran-ordered files are transposed on read).
    pub data: Vec<f64>,
    /// The stored dtype descriptor, e.g. `<f4`.
    pub descr: String,
}

const MAGIC: &[u8] = b"\x93NUMPY";

fn format_err(path: &Path, message: impl Into<String>) -> NpyError {
    NpyError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Value of `'key': value` in the header dict (value up to the next top-level comma or `}`).
fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}'");
    let start = header.find(&pat)? + pat.len();
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0usize;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                if depth == 0 {
                    return Some(rest[..i].trim());
                }
                depth -= 1;
                if depth == 0 {
                    return Some(rest[..=i].trim());
                }
            }
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// Read an NPY file into row-major `f64`.
pub fn read_npy(path: &Path) -> Result<NpyArray, NpyError> {
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(format_err(path, "missing the \\x93NUMPY magic bytes"));
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(format_err(path, "truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format_err(path, format!("unknown format version {v}"))),
    };
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        return Err(format_err(path, "truncated header"));
    }
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| format_err(path, "header is not text"))?;
    let descr = header_field(header, "descr")
        .ok_or_else(|| format_err(path, "header has no 'descr'"))?
        .trim_matches(|c| c == '\'' || c == '"')
        .to_string();
    let fortran = match header_field(header, "fortran_order") {
        Some("True") => true,
        Some("False") => false,
        _ => return Err(format_err(path, "header has no valid 'fortran_order'")),
    };
    let shape_text =
        header_field(header, "shape").ok_or_else(|| format_err(path, "header has no 'shape'"))?;
    let inner = shape_text
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format_err(path, format!("bad shape `{shape_text}`")))?;
    let mut shape = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        shape.push(
            part.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format_err(path, format!("bad shape `{shape_text}`")))?,
        );
    }
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format_err(path, "shape overflows"))?;
    let (endian, kind) = descr.split_at(1.min(descr.len()));
    let little = match endian {
        "<" | "|" | "=" => true,
        ">" => false,
        _ => {
            return Err(NpyError::Dtype {
                path: path.to_path_buf(),
                descr,
            })
        }
    };
    let width: usize = match kind {
        "f4" | "i4" | "u4" => 4,
        "f8" | "i8" | "u8" => 8,
        "i2" | "u2" => 2,
        "i1" | "u1" | "b1" => 1,
        _ => {
            return Err(NpyError::Dtype {
                path: path.to_path_buf(),
                descr,
            })
        }
    };
    let raw = &bytes[data_start..];
    let need = count
        .checked_mul(width)
        .ok_or_else(|| format_err(path, "shape overflows"))?;
    if raw.len() < need {
        return Err(format_err(
            path,
            format!(
                "data truncated: shape {shape:?} needs {need} bytes, file has {}",
                raw.len()
            ),
        ));
    }
    let mut data = Vec::with_capacity(count);
    for chunk in raw[..need].chunks_exact(width) {
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(chunk);
        if !little {
            b[..width].reverse();
        }
        let v = match kind {
            "f4" => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            "f8" => f64::from_le_bytes(b),
            "i4" => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            "u4" => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            "i8" => i64::from_le_bytes(b) as f64,
            "u8" => u64::from_le_bytes(b) as f64,
            "i2" => i16::from_le_bytes([b[0], b[1]]) as f64,
            "u2" => u16::from_le_bytes([b[0], b[1]]) as f64,
            "i1" => b[0] as i8 as f64,
            _ => b[0] as f64,
        };
        data.push(v);
    }
    if fortran && shape.len() > 1 {
        data = fortran_to_c(&data, &shape);
    }
    Ok(NpyArray { shape, data, descr })
}

/// Reorder column-major data of `shape` into row-major.
fn fortran_to_c(data: &[f64], shape: &[usize]) -> Vec<f64> {
    let n = data.len();
    let mut out = vec![0.0; n];
    let mut index = vec![0usize; shape.len()];
    for c_pos in 0..n {
        // Fortran offset of the multi-index `index`.
        let mut f_off = 0usize;
        let mut stride = 1usize;
        for (d, &i) in index.iter().enumerate() {
            f_off += i * stride;
            stride *= shape[d];
        }
        out[c_pos] = data[f_off];
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

/// Element types [`write_npy`] can store.
pub trait NpyElement: Copy {
    /// NumPy dtype descriptor.
    const DESCR: &'static str;
    /// Little-endian bytes.
    fn write_le(self, out: &mut Vec<u8>);
}

impl NpyElement for f32 {
    const DESCR: &'static str = "<f4";
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NpyElement for f64 {
    const DESCR: &'static str = "<f8";
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// Write a row-major array as NPY version 1.0 (via a temporary file renamed into place).
pub fn write_npy<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> Result<(), NpyError> {
    let expected: usize = shape.iter().product();
    if expected != data.len() {
        return Err(format_err(
            path,
            format!(
                "shape {shape:?} holds {expected} values, got {}",
                data.len()
            ),
        ));
    }
    let shape_text = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        T::DESCR
    );
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len() * 8);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for &v in data {
        v.write_le(&mut bytes);
    }
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("npy.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("lrsmc-npy-{}-{name}", std::process::id()))
    }

    #[test]
    fn round_trip_f32_and_f64() {
        let p = tmp("a.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        write_npy(&p, &[3, 4], &data).unwrap();
        let a = read_npy(&p).unwrap();
        assert_eq!(a.shape, vec![3, 4]);
        assert_eq!(a.descr, "<f4");
        assert_eq!(a.data[5], 2.5);
        let d: Vec<f64> = vec![1.0, -2.0, 3.5];
        write_npy(&p, &[3], &d).unwrap();
        let b = read_npy(&p).unwrap();
        assert_eq!(b.shape, vec![3]);
        assert_eq!(b.data, d);
        std::fs::remove_file(&p).ok();
    }

    #[test]
    fn fortran_order_is_transposed() {
        // shape (2, 3) stored column-major: C order [[0,1,2],[3,4,5]] is stored 0,3,1,4,2,5.
        let c = fortran_to_c(&[0.0, 3.0, 1.0, 4.0, 2.0, 5.0], &[2, 3]);
        assert_eq!(c, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn corrupt_files_are_errors() {
        let p = tmp("bad.npy");
        std::fs::write(&p, b"hello world, not numpy").unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(e.contains("magic"), "{e}");
        write_npy(&p, &[4, 4], &[0f64; 16]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 8]).unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = read_npy(&tmp("missing.npy")).unwrap_err();
        assert!(matches!(e, NpyError::Io { .. }));
        std::fs::remove_file(&p).ok();
    }

    #[test]
    fn header_field_parses_tuples() {
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (9640, 64), }";
        assert_eq!(header_field(h, "shape"), Some("(9640, 64)"));
        assert_eq!(header_field(h, "descr"), Some("'<f4'"));
        assert_eq!(header_field(h, "fortran_order"), Some("False"));
    }
}
