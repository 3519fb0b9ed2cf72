//! The results table: a few named, typed columns (f64, i64, string, bool), written as Parquet
//! (arrow-rs, snappy) with a Markdown twin beside it for people. Every science stage writes its
//! tables through this type, and `compare` reads them back.
//!
//! ```
//! use lowrank_smc::pipeline::table::{Column, Table};
//! # fn main() -> Result<(), lowrank_smc::pipeline::table::TableError> {
//! let table = Table::new()
//!     .with("dataset", Column::from(vec!["eeg", "hpc"]))?
//!     .with("d_stsp", Column::from(vec![0.12, 0.3]))?;
//! let dir = std::env::temp_dir().join(format!("table-doc-{}", std::process::id()));
//! table.write(&dir.join("metrics.parquet"))?;       // also writes metrics.md
//! assert_eq!(Table::read_parquet(&dir.join("metrics.parquet"))?, table);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    Int8Array, LargeStringArray, RecordBatch, StringArray, UInt16Array, UInt32Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::cache::temp_path_beside;

/// A param value as label text: strings as they are, anything else as JSON (`3`, `true`).
pub fn label_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One typed column.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Floating point (NaN allowed; read-back nulls become NaN).
    F64(Vec<f64>),
    /// Integers.
    I64(Vec<i64>),
    /// Text (keys such as dataset or model names).
    Str(Vec<String>),
    /// Flags.
    Bool(Vec<bool>),
}

impl Column {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::F64(v) => v.len(),
            Column::I64(v) => v.len(),
            Column::Str(v) => v.len(),
            Column::Bool(v) => v.len(),
        }
    }
    /// True when it has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The type's name (`f64`, `i64`, `string`, `bool`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Column::F64(_) => "f64",
            Column::I64(_) => "i64",
            Column::Str(_) => "string",
            Column::Bool(_) => "bool",
        }
    }
    /// Row `row` as a number (f64 and i64 columns).
    pub fn number(&self, row: usize) -> Option<f64> {
        match self {
            Column::F64(v) => v.get(row).copied(),
            Column::I64(v) => v.get(row).map(|&x| x as f64),
            _ => None,
        }
    }
    /// Row `row` as a number, also when it is text that reads as one (e.g. a seed given as a
    /// stage label, "3").
    pub fn number_or_text(&self, row: usize) -> Option<f64> {
        self.number(row)
            .or_else(|| self.text(row).trim().parse::<f64>().ok())
    }
    /// Row `row` as text, as shown in Markdown.
    pub fn text(&self, row: usize) -> String {
        match self {
            Column::F64(v) => v.get(row).map(|&x| format_f64(x)).unwrap_or_default(),
            Column::I64(v) => v.get(row).map(|x| x.to_string()).unwrap_or_default(),
            Column::Str(v) => v.get(row).cloned().unwrap_or_default(),
            Column::Bool(v) => v.get(row).map(|x| x.to_string()).unwrap_or_default(),
        }
    }
    fn to_arrow(&self) -> (DataType, ArrayRef) {
        match self {
            Column::F64(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
            Column::I64(v) => (DataType::Int64, Arc::new(Int64Array::from(v.clone()))),
            Column::Str(v) => (
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(v.iter())),
            ),
            Column::Bool(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v.clone()))),
        }
    }
}

impl From<Vec<f64>> for Column {
    fn from(v: Vec<f64>) -> Self {
        Column::F64(v)
    }
}
impl From<Vec<i64>> for Column {
    fn from(v: Vec<i64>) -> Self {
        Column::I64(v)
    }
}
impl From<Vec<String>> for Column {
    fn from(v: Vec<String>) -> Self {
        Column::Str(v)
    }
}
impl From<Vec<&str>> for Column {
    fn from(v: Vec<&str>) -> Self {
        Column::Str(v.into_iter().map(String::from).collect())
    }
}
impl From<Vec<bool>> for Column {
    fn from(v: Vec<bool>) -> Self {
        Column::Bool(v)
    }
}

/// Shortest readable text for a float: up to 6 significant digits, scientific when tiny/huge.
pub fn format_f64(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return "0".into();
    }
    let magnitude = x.abs();
    if !(1e-4..1e6).contains(&magnitude) {
        return format!("{x:.4e}");
    }
    let decimals = (5 - magnitude.log10().floor() as i32).clamp(0, 10) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Why a table could not be built, written or read.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Columns of different lengths.
    #[error("column `{name}` has {got} rows but the table has {expected}")]
    Length {
        /// Column name.
        name: String,
        /// Its rows.
        got: usize,
        /// The table's rows.
        expected: usize,
    },
    /// Two columns with one name.
    #[error("duplicate column `{0}`")]
    Duplicate(String),
    /// A Parquet column of a type the table does not hold.
    #[error("{path}: column `{name}` has type {data_type}, not one of f64, i64, string, bool")]
    UnsupportedType {
        /// File.
        path: PathBuf,
        /// Column.
        name: String,
        /// Its Arrow type.
        data_type: String,
    },
    /// Nulls in a non-float column.
    #[error("{path}: column `{name}` has missing values (only f64 columns may, as NaN)")]
    Nulls {
        /// File.
        path: PathBuf,
        /// Column.
        name: String,
    },
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Parquet or Arrow.
    #[error("{path}: {message}")]
    Format {
        /// File.
        path: PathBuf,
        /// What the library said.
        message: String,
    },
}

/// A table of named, typed columns of equal length.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    columns: Vec<(String, Column)>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }
    /// Append a column (builder style).
    pub fn with(
        mut self,
        name: impl Into<String>,
        column: impl Into<Column>,
    ) -> Result<Self, TableError> {
        self.push(name, column)?;
        Ok(self)
    }
    /// Append a column.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        column: impl Into<Column>,
    ) -> Result<(), TableError> {
        let name = name.into();
        let column = column.into();
        if self.columns.iter().any(|(n, _)| *n == name) {
            return Err(TableError::Duplicate(name));
        }
        if let Some((_, first)) = self.columns.first() {
            if first.len() != column.len() {
                return Err(TableError::Length {
                    name,
                    got: column.len(),
                    expected: first.len(),
                });
            }
        }
        self.columns.push((name, column));
        Ok(())
    }
    /// Append one constant text column per label (e.g. a stage's `labels: {seed: 3}`), each
    /// `n_rows` long; values are written as [`label_text`].
    pub fn push_labels<'a>(
        &mut self,
        labels: impl IntoIterator<Item = (&'a String, &'a serde_json::Value)>,
        n_rows: usize,
    ) -> Result<(), TableError> {
        for (name, value) in labels {
            self.push(name.clone(), vec![label_text(value); n_rows])?;
        }
        Ok(())
    }
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.columns.first().map(|(_, c)| c.len()).unwrap_or(0)
    }
    /// Number of columns.
    pub fn n_columns(&self) -> usize {
        self.columns.len()
    }
    /// Column names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|(n, _)| n.as_str())
    }
    /// Columns in order.
    pub fn columns(&self) -> impl Iterator<Item = (&str, &Column)> {
        self.columns.iter().map(|(n, c)| (n.as_str(), c))
    }
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// Write Parquet (snappy) at `path` via a temporary file and a rename.
    pub fn write_parquet(&self, path: &Path) -> Result<(), TableError> {
        let format_err = |e: &dyn std::fmt::Display| TableError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        for (name, column) in &self.columns {
            let (data_type, array) = column.to_arrow();
            fields.push(Field::new(name, data_type, false));
            arrays.push(array);
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = if arrays.is_empty() {
            RecordBatch::new_empty(schema.clone())
        } else {
            RecordBatch::try_new(schema.clone(), arrays).map_err(|e| format_err(&e))?
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| TableError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let temp = temp_path_beside(path);
        let io_err = |source| TableError::Io {
            path: path.to_path_buf(),
            source,
        };
        let result = (|| {
            let file = std::fs::File::create(&temp).map_err(io_err)?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            let mut writer =
                ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| format_err(&e))?;
            writer.write(&batch).map_err(|e| format_err(&e))?;
            writer.close().map_err(|e| format_err(&e))?;
            std::fs::rename(&temp, path).map_err(io_err)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    /// Read a Parquet file (f64/f32 → f64, any integer → i64, utf8 → string, bool).
    pub fn read_parquet(path: &Path) -> Result<Table, TableError> {
        let format_err = |e: &dyn std::fmt::Display| TableError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(|source| TableError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| format_err(&e))?;
        let schema = builder.schema().clone();
        let reader = builder.build().map_err(|e| format_err(&e))?;
        let mut columns: Vec<(String, Column)> = schema
            .fields()
            .iter()
            .map(|f| {
                let empty = match f.data_type() {
                    DataType::Float64 | DataType::Float32 => Ok(Column::F64(vec![])),
                    DataType::Int64
                    | DataType::Int32
                    | DataType::Int16
                    | DataType::Int8
                    | DataType::UInt32
                    | DataType::UInt16
                    | DataType::UInt8 => Ok(Column::I64(vec![])),
                    DataType::Utf8 | DataType::LargeUtf8 => Ok(Column::Str(vec![])),
                    DataType::Boolean => Ok(Column::Bool(vec![])),
                    other => Err(TableError::UnsupportedType {
                        path: path.to_path_buf(),
                        name: f.name().clone(),
                        data_type: other.to_string(),
                    }),
                };
                empty.map(|c| (f.name().clone(), c))
            })
            .collect::<Result<_, _>>()?;
        for batch in reader {
            let batch = batch.map_err(|e| format_err(&e))?;
            for (i, (name, column)) in columns.iter_mut().enumerate() {
                append(column, batch.column(i).as_ref(), path, name)?;
            }
        }
        Ok(Table { columns })
    }

    /// The table as a Markdown pipe table (numbers right-aligned).
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let header: Vec<&str> = self.names().collect();
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        let align: Vec<&str> = self
            .columns
            .iter()
            .map(|(_, c)| match c {
                Column::F64(_) | Column::I64(_) => "---:",
                _ => "---",
            })
            .collect();
        out.push_str(&format!("| {} |\n", align.join(" | ")));
        for row in 0..self.n_rows() {
            let cells: Vec<String> = self
                .columns
                .iter()
                .map(|(_, c)| c.text(row).replace('|', "\\|"))
                .collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out
    }

    /// Write the Markdown rendering at `path` (atomically).
    pub fn write_markdown(&self, path: &Path) -> Result<(), TableError> {
        super::cache::write_atomic(path, self.to_markdown().as_bytes()).map_err(|source| {
            TableError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Write `path` (Parquet) and its Markdown twin `path` with extension `.md`.
    pub fn write(&self, parquet_path: &Path) -> Result<(), TableError> {
        self.write_parquet(parquet_path)?;
        self.write_markdown(&parquet_path.with_extension("md"))
    }
}

fn append(
    column: &mut Column,
    array: &dyn Array,
    path: &Path,
    name: &str,
) -> Result<(), TableError> {
    let any = array.as_any();
    let nulls = || TableError::Nulls {
        path: path.to_path_buf(),
        name: name.to_string(),
    };
    macro_rules! ints {
        ($v:ident, $($t:ty),*) => {{
            $(if let Some(a) = any.downcast_ref::<$t>() {
                if a.null_count() > 0 { return Err(nulls()); }
                $v.extend(a.values().iter().map(|&x| x as i64));
                return Ok(());
            })*
        }};
    }
    match column {
        Column::F64(v) => {
            if let Some(a) = any.downcast_ref::<Float64Array>() {
                v.extend(a.iter().map(|x| x.unwrap_or(f64::NAN)));
            } else if let Some(a) = any.downcast_ref::<Float32Array>() {
                v.extend(a.iter().map(|x| x.map(f64::from).unwrap_or(f64::NAN)));
            }
        }
        Column::I64(v) => {
            ints!(
                v,
                Int64Array,
                Int32Array,
                Int16Array,
                Int8Array,
                UInt32Array,
                UInt16Array,
                UInt8Array
            );
        }
        Column::Str(v) => {
            if array.null_count() > 0 {
                return Err(nulls());
            }
            if let Some(a) = any.downcast_ref::<StringArray>() {
                v.extend(a.iter().map(|x| x.unwrap_or_default().to_string()));
            } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
                v.extend(a.iter().map(|x| x.unwrap_or_default().to_string()));
            }
        }
        Column::Bool(v) => {
            if array.null_count() > 0 {
                return Err(nulls());
            }
            if let Some(a) = any.downcast_ref::<BooleanArray>() {
                v.extend(a.iter().map(|x| x.unwrap_or(false)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Result<Table, TableError> {
        Table::new()
            .with("dataset", vec!["eeg", "hpc|2"])?
            .with("d_stsp", vec![0.123456789, f64::NAN])?
            .with("n", vec![3i64, -4])?
            .with("ok", vec![true, false])
    }

    #[test]
    fn parquet_round_trip() -> Result<(), TableError> {
        let dir = tempfile::tempdir().map_err(|source| TableError::Io {
            path: "tmp".into(),
            source,
        })?;
        let path = dir.path().join("sub/t.parquet");
        let table = sample()?;
        table.write(&path)?;
        let back = Table::read_parquet(&path)?;
        assert_eq!(back.n_rows(), 2);
        assert_eq!(back.column("dataset"), table.column("dataset"));
        assert_eq!(back.column("n"), table.column("n"));
        assert_eq!(back.column("ok"), table.column("ok"));
        let Some(Column::F64(values)) = back.column("d_stsp") else {
            panic!("d_stsp is not f64");
        };
        assert_eq!(values[0], 0.123456789);
        assert!(values[1].is_nan());
        let md = std::fs::read_to_string(dir.path().join("sub/t.md")).unwrap_or_default();
        assert_eq!(
            md,
            "| dataset | d_stsp | n | ok |\n| --- | ---: | ---: | --- |\n\
             | eeg | 0.123457 | 3 | true |\n| hpc\\|2 | NaN | -4 | false |\n"
        );
        Ok(())
    }

    #[test]
    fn mismatched_lengths_and_duplicates_are_rejected() {
        let err = Table::new()
            .with("a", vec![1.0])
            .and_then(|t| t.with("b", vec![1.0, 2.0]));
        assert!(matches!(
            err,
            Err(TableError::Length {
                got: 2,
                expected: 1,
                ..
            })
        ));
        let err = Table::new()
            .with("a", vec![1.0])
            .and_then(|t| t.with("a", vec![2.0]));
        assert!(matches!(err, Err(TableError::Duplicate(_))));
    }

    #[test]
    fn floats_print_readably() {
        assert_eq!(format_f64(0.001), "0.001");
        assert_eq!(format_f64(1234.5678), "1234.57");
        assert_eq!(format_f64(1.5e-7), "1.5000e-7");
        assert_eq!(format_f64(-2.0), "-2");
    }
}
