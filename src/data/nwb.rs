//! NWB (Neurodata Without Borders 2.x) on HDF5, read without Python: the `units` table (ragged
//! `spike_times` + `spike_times_index`, ids, `obs_intervals`, extra columns such as NLB's
//! `heldout`), `intervals/*` tables (`trials` with `start_time`, `stop_time`, event times,
//! condition ids, NLB's `split`), TimeSeries anywhere (`acquisition`, `processing/behavior`,
//! `processing/ecephys/LFP`, …) with `rate` + `starting_time` or `timestamps`, `conversion` and
//! `offset` applied.
//!
//! Streaming: [`NwbFile::units`] reads only the index columns; spike times are read one unit
//! at a time ([`NwbFile::spike_times`]), a TimeSeries only over the requested time window
//! ([`NwbFile::time_series`]) — memory follows what is asked for, not the file size.
//!
//! Every error names the file, the NWB path inside it and what to do.

use std::path::{Path, PathBuf};

use hdf5::types::{TypeDescriptor, VarLenAscii, VarLenUnicode};
use indexmap::IndexMap;

/// Errors reading an NWB file.
#[derive(Debug, thiserror::Error)]
pub enum NwbError {
    /// The file does not exist or is not HDF5.
    #[error("{file}: {message}")]
    File {
        /// File.
        file: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Something inside the file is missing or malformed.
    #[error("{file}: {object}: {message}")]
    Invalid {
        /// File.
        file: PathBuf,
        /// NWB path inside the file (`units/spike_times_index`).
        object: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// An open NWB file.
pub struct NwbFile {
    file: hdf5::File,
    path: PathBuf,
}

/// The unit table's index columns (spike times stay on disk until asked for).
#[derive(Debug, Clone, PartialEq)]
pub struct Units {
    /// Unit ids (`units/id`).
    pub ids: Vec<i64>,
    /// End offset of each unit's spikes in `units/spike_times` (the VectorIndex).
    pub spike_ends: Vec<u64>,
    /// Observation intervals per unit (`obs_intervals`), when present.
    pub obs_intervals: Option<Vec<Vec<(f64, f64)>>>,
    /// NLB's held-out flag per unit (`heldout`), when present.
    pub heldout: Option<Vec<bool>>,
    /// The other scalar columns (electrodes, quality …).
    pub columns: IndexMap<String, Column>,
}

impl Units {
    /// Number of units.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    /// No units.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Total number of spikes.
    pub fn n_spikes(&self) -> u64 {
        self.spike_ends.last().copied().unwrap_or(0)
    }
    /// The spike range of unit `i` in `spike_times`.
    pub fn spike_range(&self, i: usize) -> (u64, u64) {
        let start = if i == 0 { 0 } else { self.spike_ends[i - 1] };
        (start, self.spike_ends[i])
    }
    /// The end of the recording as the units table says it: the latest `obs_intervals` end.
    pub fn observed_end(&self) -> Option<f64> {
        self.obs_intervals.as_ref().and_then(|iv| {
            iv.iter()
                .flat_map(|u| u.iter().map(|&(_, e)| e))
                .fold(None, |m: Option<f64>, e| Some(m.map_or(e, |m| m.max(e))))
        })
    }
}

/// One column of a DynamicTable.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Floating point values.
    Float(Vec<f64>),
    /// Integer values.
    Int(Vec<i64>),
    /// Booleans (h5py's enum bool).
    Bool(Vec<bool>),
    /// Text.
    Text(Vec<String>),
    /// A ragged or multi-dimensional column, not loaded (its number of rows).
    Other(usize),
}

impl Column {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Float(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::Text(v) => v.len(),
            Column::Other(n) => *n,
        }
    }
    /// Empty column.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The values as f64 (floats, integers and booleans), else `None`.
    pub fn as_f64(&self) -> Option<Vec<f64>> {
        match self {
            Column::Float(v) => Some(v.clone()),
            Column::Int(v) => Some(v.iter().map(|&x| x as f64).collect()),
            Column::Bool(v) => Some(v.iter().map(|&x| f64::from(u8::from(x))).collect()),
            _ => None,
        }
    }
    /// The values as text (numbers formatted), for ids and split labels.
    pub fn as_text(&self) -> Vec<String> {
        match self {
            Column::Float(v) => v.iter().map(|x| x.to_string()).collect(),
            Column::Int(v) => v.iter().map(|x| x.to_string()).collect(),
            Column::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
            Column::Text(v) => v.clone(),
            Column::Other(n) => vec![String::new(); *n],
        }
    }
}

/// An `intervals/<name>` table (TimeIntervals), e.g. `trials`.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalTable {
    /// Table name.
    pub name: String,
    /// Row ids.
    pub ids: Vec<i64>,
    /// Columns in `colnames` order (`start_time`, `stop_time`, …).
    pub columns: IndexMap<String, Column>,
}

impl IntervalTable {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// A numeric column, or an error naming the columns that exist.
    pub fn numeric(&self, name: &str) -> Result<Vec<f64>, String> {
        match self.columns.get(name) {
            Some(c) => c
                .as_f64()
                .ok_or_else(|| format!("column `{name}` of `{}` is not numeric", self.name)),
            None => Err(format!(
                "`{}` has no column `{name}` (columns: {})",
                self.name,
                self.columns.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// How a TimeSeries' samples map to time.
#[derive(Debug, Clone, PartialEq)]
pub enum Timing {
    /// Regular sampling: sample i (of the whole series) is at `start + i / rate`.
    Rate {
        /// `starting_time` (s).
        start: f64,
        /// `starting_time.rate` (Hz).
        rate: f64,
    },
    /// Explicit `timestamps` of the samples read (s).
    Timestamps(Vec<f64>),
}

/// A TimeSeries (or ElectricalSeries, SpatialSeries) read over a time window.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeries {
    /// NWB path of the series group.
    pub path: String,
    /// `neurodata_type` (TimeSeries, ElectricalSeries, SpatialSeries …).
    pub neurodata_type: String,
    /// Samples read.
    pub n_samples: usize,
    /// Channels (columns of `data`; 1 for a 1-D series).
    pub n_channels: usize,
    /// Index of the first sample read within the whole series.
    pub first_sample: usize,
    /// Values, sample-major (`n_samples × n_channels`), with `conversion` (and
    /// `channel_conversion`) and `offset` applied: SI units.
    pub data: Vec<f64>,
    /// Sample times.
    pub timing: Timing,
    /// `data.unit`.
    pub unit: String,
}

impl TimeSeries {
    /// Time of sample `i` (0 = the first one read).
    pub fn time(&self, i: usize) -> f64 {
        match &self.timing {
            Timing::Rate { start, rate } => start + (self.first_sample + i) as f64 / rate,
            Timing::Timestamps(t) => t[i],
        }
    }
}

/// A TimeSeries-like group found in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInfo {
    /// NWB path.
    pub path: String,
    /// `neurodata_type`.
    pub neurodata_type: String,
    /// Shape of `data`.
    pub shape: Vec<usize>,
}

/// The values of an attribute or dataset as text, in any of HDF5's string encodings
/// (variable- or fixed-length, ASCII or UTF-8); a scalar gives one element.
fn container_texts(c: &hdf5::Container) -> Option<Vec<String>> {
    fn all<T: hdf5::H5Type + std::ops::Deref<Target = str>>(
        c: &hdf5::Container,
    ) -> Option<Vec<String>> {
        c.read_raw::<T>()
            .ok()
            .map(|v| v.iter().map(|s| s.to_string()).collect())
    }
    all::<VarLenUnicode>(c)
        .or_else(|| all::<VarLenAscii>(c))
        .or_else(|| all::<hdf5::types::FixedAscii<1024>>(c))
        .or_else(|| all::<hdf5::types::FixedUnicode<1024>>(c))
}

/// Read a string attribute stored as variable-length or fixed-length text.
pub(crate) fn attr_text(loc: &hdf5::Location, name: &str) -> Option<String> {
    attr_texts(loc, name)?.into_iter().next()
}

fn attr_texts(loc: &hdf5::Location, name: &str) -> Option<Vec<String>> {
    let a = loc.attr(name).ok()?;
    container_texts(&a)
}

fn attr_f64(loc: &hdf5::Location, name: &str) -> Option<f64> {
    loc.attr(name).ok()?.read_scalar::<f64>().ok()
}

impl NwbFile {
    /// Open `path`: it must be HDF5 and carry NWB's root attributes.
    pub fn open(path: &Path) -> Result<Self, NwbError> {
        if !path.is_file() {
            return Err(NwbError::File {
                file: path.to_path_buf(),
                message: "no such file (hint: `lowrank-smc fetch ID` downloads a dataset named \
                          in datasets/, or give the path of your own .nwb file)"
                    .into(),
            });
        }
        let file = hdf5::File::open(path).map_err(|e| NwbError::File {
            file: path.to_path_buf(),
            message: format!(
                "not an HDF5 file ({e}); NWB 2.x files are HDF5 — is this an NWB 1.x, \
                 a Zarr-backed NWB, or a truncated download?"
            ),
        })?;
        let nwb = attr_text(&file, "nwb_version");
        let ty = attr_text(&file, "neurodata_type");
        // NWB 2.x roots say `neurodata_type = NWBFile`; accept an `nwb_version` alone only with
        // NWBFile's required groups (other HDF5 files may carry such an attribute).
        let nwb_like = ty.as_deref() == Some("NWBFile")
            || (nwb.is_some() && file.link_exists("acquisition") && file.link_exists("general"));
        if !nwb_like {
            return Err(NwbError::File {
                file: path.to_path_buf(),
                message: "HDF5 but not NWB: the root is not an NWBFile (no `neurodata_type = \
                          NWBFile` attribute, no `acquisition` / `general` groups)"
                    .into(),
            });
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `general/notes`, when present (our surrogates say `data_source=surrogate` there).
    pub fn notes(&self) -> Option<String> {
        let ds = self.file.dataset("general/notes").ok()?;
        container_texts(&ds)?.into_iter().next()
    }

    /// The root `nwb_version` attribute.
    pub fn nwb_version(&self) -> Option<String> {
        attr_text(&self.file, "nwb_version")
    }

    fn invalid(&self, object: &str, message: impl Into<String>) -> NwbError {
        NwbError::Invalid {
            file: self.path.clone(),
            object: object.to_string(),
            message: message.into(),
        }
    }

    fn group(&self, path: &str, hint: &str) -> Result<hdf5::Group, NwbError> {
        self.file
            .group(path)
            .map_err(|_| self.invalid(path, format!("no such group ({hint})")))
    }

    fn dataset(&self, path: &str, hint: &str) -> Result<hdf5::Dataset, NwbError> {
        self.file
            .dataset(path)
            .map_err(|_| self.invalid(path, format!("no such dataset ({hint})")))
    }

    fn exists(&self, path: &str) -> bool {
        // link_exists does not walk missing intermediate groups: check each level.
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let next = if prefix.is_empty() {
                part.to_string()
            } else {
                format!("{prefix}/{part}")
            };
            if !self.file.link_exists(&next) {
                return false;
            }
            prefix = next;
        }
        !prefix.is_empty()
    }

    fn read_ids(&self, table: &str, n_rows: Option<usize>) -> Result<Vec<i64>, NwbError> {
        let p = format!("{table}/id");
        if !self.exists(&p) {
            let n = n_rows.ok_or_else(|| self.invalid(&p, "no `id` dataset"))?;
            return Ok((0..n as i64).collect());
        }
        let ds = self.dataset(&p, "DynamicTable ids")?;
        ds.read_raw::<i64>()
            .map_err(|e| self.invalid(&p, format!("cannot read as integers: {e}")))
    }

    /// Read a VectorIndex (cumulative ends) and check it against the data length.
    fn read_index(&self, index_path: &str, data_len: usize) -> Result<Vec<u64>, NwbError> {
        let ds = self.dataset(index_path, "VectorIndex")?;
        let ends: Vec<u64> = ds
            .read_raw::<u64>()
            .map_err(|e| self.invalid(index_path, format!("cannot read as integers: {e}")))?;
        let mut prev = 0;
        for (i, &e) in ends.iter().enumerate() {
            if e < prev {
                return Err(self.invalid(
                    index_path,
                    format!("row {i}: index {e} is below the previous {prev} (must be non-decreasing cumulative ends)"),
                ));
            }
            if e as usize > data_len {
                return Err(self.invalid(
                    index_path,
                    format!(
                        "row {i}: index {e} is out of range (the indexed data has {data_len} \
                         values); the file is corrupt or was truncated"
                    ),
                ));
            }
            prev = e;
        }
        Ok(ends)
    }

    fn read_column(&self, table: &str, name: &str, n_rows: usize) -> Result<Column, NwbError> {
        let p = format!("{table}/{name}");
        if self.exists(&format!("{p}_index")) {
            return Ok(Column::Other(n_rows));
        }
        let ds = self.dataset(&p, "column listed in colnames")?;
        let shape = ds.shape();
        if shape.len() != 1 {
            return Ok(Column::Other(shape.first().copied().unwrap_or(0)));
        }
        let desc = ds
            .dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(|e| self.invalid(&p, format!("unreadable type: {e}")))?;
        let col = match desc {
            TypeDescriptor::Float(_) => Column::Float(
                ds.read_raw::<f64>()
                    .map_err(|e| self.invalid(&p, e.to_string()))?,
            ),
            TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => Column::Int(
                ds.read_raw::<i64>()
                    .map_err(|e| self.invalid(&p, e.to_string()))?,
            ),
            TypeDescriptor::Boolean | TypeDescriptor::Enum(_) => {
                let v = ds
                    .read_raw::<i8>()
                    .map_err(|e| self.invalid(&p, e.to_string()))
                    .or_else(|_| {
                        ds.read_raw::<bool>()
                            .map(|b| b.into_iter().map(i8::from).collect())
                            .map_err(|e| self.invalid(&p, e.to_string()))
                    })?;
                Column::Bool(v.into_iter().map(|x| x != 0).collect())
            }
            TypeDescriptor::VarLenUnicode
            | TypeDescriptor::VarLenAscii
            | TypeDescriptor::FixedAscii(_)
            | TypeDescriptor::FixedUnicode(_) => Column::Text(
                container_texts(&ds)
                    .ok_or_else(|| self.invalid(&p, "text column in an unsupported encoding"))?,
            ),
            _ => Column::Other(shape[0]),
        };
        Ok(col)
    }

    /// The `units` table's index columns, validated (ragged index in range and monotone).
    pub fn units(&self) -> Result<Units, NwbError> {
        if !self.exists("units") {
            return Err(self.invalid(
                "units",
                "this NWB file has no `units` table (no sorted spikes); bin an LFP or \
                 behaviour series instead, or use the file that holds the spike-sorted units",
            ));
        }
        let st = self.dataset(
            "units/spike_times",
            "the units table has no spike times column",
        )?;
        let n_spikes = st.size();
        let ends = self.read_index("units/spike_times_index", n_spikes)?;
        let n = ends.len();
        let ids = self.read_ids("units", Some(n))?;
        if ids.len() != n {
            return Err(self.invalid(
                "units/id",
                format!(
                    "{} ids for {n} rows of spike_times_index; the table is inconsistent",
                    ids.len()
                ),
            ));
        }
        let obs_intervals = if self.exists("units/obs_intervals") {
            let ds = self.dataset("units/obs_intervals", "")?;
            let shape = ds.shape();
            if shape.len() != 2 || shape[1] != 2 {
                return Err(self.invalid(
                    "units/obs_intervals",
                    format!("shape {shape:?}: expected (n_intervals, 2)"),
                ));
            }
            let flat: Vec<f64> = ds
                .read_raw()
                .map_err(|e| self.invalid("units/obs_intervals", e.to_string()))?;
            let iends = if self.exists("units/obs_intervals_index") {
                self.read_index("units/obs_intervals_index", shape[0])?
            } else {
                (1..=shape[0] as u64).collect()
            };
            if iends.len() != n {
                return Err(self.invalid(
                    "units/obs_intervals_index",
                    format!("{} rows for {n} units", iends.len()),
                ));
            }
            let mut out = Vec::with_capacity(n);
            let mut s = 0usize;
            for &e in &iends {
                out.push(
                    (s..e as usize)
                        .map(|k| (flat[2 * k], flat[2 * k + 1]))
                        .collect::<Vec<_>>(),
                );
                s = e as usize;
            }
            Some(out)
        } else {
            None
        };
        let units_group = self.group("units", "")?;
        let colnames = attr_texts(&units_group, "colnames").unwrap_or_default();
        let mut columns = IndexMap::new();
        let mut heldout = None;
        for c in colnames {
            if matches!(c.as_str(), "spike_times" | "obs_intervals") {
                continue;
            }
            let col = self.read_column("units", &c, n)?;
            if col.len() != n {
                return Err(self.invalid(
                    &format!("units/{c}"),
                    format!("{} rows for {n} units", col.len()),
                ));
            }
            if c == "heldout" {
                heldout = match &col {
                    Column::Bool(b) => Some(b.clone()),
                    Column::Int(v) => Some(v.iter().map(|&x| x != 0).collect()),
                    _ => None,
                };
            }
            columns.insert(c, col);
        }
        Ok(Units {
            ids,
            spike_ends: ends,
            obs_intervals,
            heldout,
            columns,
        })
    }

    /// Spike times (s) of unit `i`, checked finite and sorted.
    pub fn spike_times(&self, units: &Units, i: usize) -> Result<Vec<f64>, NwbError> {
        let mut v = Vec::new();
        self.spike_reader()?.read(units, i, &mut v)?;
        Ok(v)
    }

    /// A reader of `units/spike_times` that fills one caller-owned buffer unit by unit (opens
    /// the dataset once; no allocation or page faults per unit once the buffer has grown).
    pub fn spike_reader(&self) -> Result<SpikeReader<'_>, NwbError> {
        Ok(SpikeReader {
            file: self,
            ds: self.dataset("units/spike_times", "")?,
        })
    }

    /// The names of the `intervals/*` tables (and `trials` at the root in old files).
    pub fn interval_tables(&self) -> Vec<String> {
        self.file
            .group("intervals")
            .and_then(|g| g.member_names())
            .unwrap_or_default()
    }

    /// The `intervals/<name>` table (`trials`, `epochs`, …) with all scalar columns.
    pub fn intervals(&self, name: &str) -> Result<IntervalTable, NwbError> {
        let gp = format!("intervals/{name}");
        if !self.exists(&gp) {
            let have = self.interval_tables();
            return Err(self.invalid(
                &gp,
                format!(
                    "no such table (tables in intervals/: {})",
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                ),
            ));
        }
        let g = self.group(&gp, "")?;
        let colnames = attr_texts(&g, "colnames")
            .ok_or_else(|| self.invalid(&gp, "no `colnames` attribute (not a DynamicTable)"))?;
        let first = colnames.first().cloned().unwrap_or_default();
        let n = if first.is_empty() {
            0
        } else {
            self.dataset(&format!("{gp}/{first}"), "")?
                .shape()
                .first()
                .copied()
                .unwrap_or(0)
        };
        let ids = self.read_ids(&gp, Some(n))?;
        let mut columns = IndexMap::new();
        for c in colnames {
            let col = self.read_column(&gp, &c, ids.len())?;
            if col.len() != ids.len() {
                return Err(self.invalid(
                    &format!("{gp}/{c}"),
                    format!("{} rows for {} ids", col.len(), ids.len()),
                ));
            }
            columns.insert(c, col);
        }
        Ok(IntervalTable {
            name: name.to_string(),
            ids,
            columns,
        })
    }

    /// Every TimeSeries-like group (has a `data` dataset and a `neurodata_type`) under
    /// `acquisition` and `processing`, up to three levels deep.
    pub fn list_series(&self) -> Vec<SeriesInfo> {
        fn walk(f: &NwbFile, path: &str, depth: usize, out: &mut Vec<SeriesInfo>) {
            let Ok(g) = f.file.group(path) else { return };
            if g.link_exists("data") {
                if let Ok(ds) = g.dataset("data") {
                    out.push(SeriesInfo {
                        path: path.to_string(),
                        neurodata_type: attr_text(&g, "neurodata_type").unwrap_or_default(),
                        shape: ds.shape(),
                    });
                    return;
                }
            }
            if depth == 0 {
                return;
            }
            for m in g.member_names().unwrap_or_default() {
                walk(f, &format!("{path}/{m}"), depth - 1, out);
            }
        }
        let mut out = Vec::new();
        walk(self, "acquisition", 2, &mut out);
        walk(self, "processing", 3, &mut out);
        out
    }

    /// The LFP series: the first ElectricalSeries under `processing/ecephys/LFP` (or any
    /// group named `LFP` in `processing/*`), else an `acquisition` ElectricalSeries whose
    /// name contains "lfp".
    pub fn find_lfp(&self) -> Result<String, NwbError> {
        let all = self.list_series();
        let pick = all
            .iter()
            .find(|s| s.path.starts_with("processing/") && s.path.contains("/LFP/"))
            .or_else(|| all.iter().find(|s| s.path.to_lowercase().contains("lfp")));
        pick.map(|s| s.path.clone()).ok_or_else(|| {
            self.invalid(
                "processing/ecephys/LFP",
                format!(
                    "no LFP ElectricalSeries found; series in the file: {}",
                    if all.is_empty() {
                        "none".to_string()
                    } else {
                        all.iter()
                            .map(|s| s.path.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            )
        })
    }

    /// Read the TimeSeries at `path` over `[t0, t1)` seconds (all of it for `None`), with
    /// `conversion`, `channel_conversion` and `offset` applied.
    pub fn time_series(
        &self,
        path: &str,
        window: Option<(f64, f64)>,
    ) -> Result<TimeSeries, NwbError> {
        let path = path.trim_matches('/');
        if !self.exists(path) {
            let have: Vec<String> = self.list_series().into_iter().map(|s| s.path).collect();
            return Err(self.invalid(
                path,
                format!(
                    "no such TimeSeries (series in the file: {})",
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                ),
            ));
        }
        let g = self.group(path, "a TimeSeries is a group")?;
        let dp = format!("{path}/data");
        let ds = self.dataset(&dp, "a TimeSeries has a `data` dataset")?;
        let shape = ds.shape();
        let (n_total, n_ch) = match shape.as_slice() {
            [n] => (*n, 1),
            [n, c] => (*n, *c),
            s => {
                return Err(self.invalid(
                    &dp,
                    format!(
                        "shape {s:?}: only 1-D (time) and 2-D (time, channel) series are supported"
                    ),
                ))
            }
        };
        let conversion = attr_f64(&ds, "conversion").unwrap_or(1.0);
        let offset = attr_f64(&ds, "offset").unwrap_or(0.0);
        let unit = attr_text(&ds, "unit").unwrap_or_default();
        // Sample range of the window.
        let src = if self.exists(&format!("{path}/timestamps")) {
            let tp = format!("{path}/timestamps");
            let t: Vec<f64> = self
                .dataset(&tp, "")?
                .read_raw()
                .map_err(|e| self.invalid(&tp, e.to_string()))?;
            if t.len() != n_total {
                return Err(self.invalid(
                    &tp,
                    format!("{} timestamps for {n_total} samples of data", t.len()),
                ));
            }
            if let Some(k) = t.iter().position(|x| !x.is_finite()) {
                return Err(self.invalid(&tp, format!("timestamp {k} is {}", t[k])));
            }
            if let Some(k) = t.windows(2).position(|w| w[1] < w[0]) {
                return Err(self.invalid(&tp, format!("timestamps decrease at sample {}", k + 1)));
            }
            Timing::Timestamps(t)
        } else if self.exists(&format!("{path}/starting_time")) {
            let sp = format!("{path}/starting_time");
            let sds = self.dataset(&sp, "")?;
            let start: f64 = sds
                .read_scalar()
                .map_err(|e| self.invalid(&sp, e.to_string()))?;
            let rate =
                attr_f64(&sds, "rate").ok_or_else(|| self.invalid(&sp, "no `rate` attribute"))?;
            if !(rate.is_finite() && rate > 0.0 && start.is_finite()) {
                return Err(self.invalid(
                    &sp,
                    format!("starting_time {start} / rate {rate}: must be finite, rate > 0"),
                ));
            }
            Timing::Rate { start, rate }
        } else {
            return Err(self.invalid(
                path,
                "neither `timestamps` nor `starting_time` (with `rate`): the samples have no times",
            ));
        };
        let (s0, s1) = match (window, &src) {
            (None, _) => (0, n_total),
            (Some((a, b)), Timing::Rate { start, rate }) => {
                let lo = ((a - start) * rate).ceil().max(0.0) as usize;
                let hi = ((b - start) * rate).ceil().max(0.0) as usize;
                (lo.min(n_total), hi.min(n_total))
            }
            (Some((a, b)), Timing::Timestamps(t)) => {
                (t.partition_point(|&x| x < a), t.partition_point(|&x| x < b))
            }
        };
        let s1 = s1.max(s0);
        let mut data: Vec<f64> = if s1 == s0 {
            Vec::new()
        } else if shape.len() == 1 {
            ds.read_slice_1d::<f64, _>(s0..s1)
                .map_err(|e| self.invalid(&dp, e.to_string()))?
                .to_vec()
        } else {
            ds.read_slice_2d::<f64, _>((s0..s1, ..))
                .map_err(|e| self.invalid(&dp, e.to_string()))?
                .iter()
                .copied()
                .collect()
        };
        let cc_path = format!("{path}/channel_conversion");
        let chan_conv: Option<Vec<f64>> = if self.exists(&cc_path) {
            let v: Vec<f64> = self
                .dataset(&cc_path, "")?
                .read_raw()
                .map_err(|e| self.invalid(&cc_path, e.to_string()))?;
            if v.len() != n_ch {
                return Err(
                    self.invalid(&cc_path, format!("{} factors for {n_ch} channels", v.len()))
                );
            }
            Some(v)
        } else {
            None
        };
        for (k, x) in data.iter_mut().enumerate() {
            let c = chan_conv.as_ref().map_or(1.0, |v| v[k % n_ch]);
            *x = *x * conversion * c + offset;
        }
        let timing = match src {
            Timing::Timestamps(t) => Timing::Timestamps(t[s0..s1].to_vec()),
            rate => rate,
        };
        Ok(TimeSeries {
            path: path.to_string(),
            neurodata_type: attr_text(&g, "neurodata_type").unwrap_or_default(),
            n_samples: s1 - s0,
            n_channels: n_ch,
            first_sample: s0,
            data,
            timing,
            unit,
        })
    }
}

/// Reads one unit's spike times at a time into a reused buffer (see
/// [`NwbFile::spike_reader`]).
pub struct SpikeReader<'a> {
    file: &'a NwbFile,
    ds: hdf5::Dataset,
}

impl SpikeReader<'_> {
    /// Spike times (s) of unit `i` into `buf` (cleared first), checked finite and sorted.
    pub fn read(&self, units: &Units, i: usize, buf: &mut Vec<f64>) -> Result<(), NwbError> {
        self.read_units(units, i..i + 1, buf).map(|_| ())
    }

    /// Spike times of the units `range` in one read, concatenated into `buf` (cleared
    /// first); returns where each unit's times start in `buf` (one more entry than units,
    /// ending at `buf.len()`). Each unit's times are checked finite and sorted.
    pub fn read_units(
        &self,
        units: &Units,
        range: std::ops::Range<usize>,
        buf: &mut Vec<f64>,
    ) -> Result<Vec<usize>, NwbError> {
        buf.clear();
        if range.is_empty() {
            return Ok(vec![0]);
        }
        let first = units.spike_range(range.start).0;
        let last = units.spike_range(range.end - 1).1;
        read_f64_range(
            &self.ds,
            first as usize,
            last.saturating_sub(first) as usize,
            buf,
        )
        .map_err(|err| self.file.invalid("units/spike_times", err))?;
        let mut offsets = Vec::with_capacity(range.len() + 1);
        for i in range {
            let (s, e) = units.spike_range(i);
            let (s, e) = ((s - first) as usize, (e - first) as usize);
            offsets.push(s);
            let v = &buf[s..e];
            let object = || format!("units/spike_times (unit id {})", units.ids[i]);
            if finite_and_sorted(v) {
                continue;
            }
            if let Some(k) = v.iter().position(|t| !t.is_finite()) {
                return Err(self.file.invalid(
                    &object(),
                    format!("spike {k} is {}; remove non-finite spike times", v[k]),
                ));
            }
            if let Some(k) = v.windows(2).position(|w| w[1] < w[0]) {
                return Err(self.file.invalid(
                    &object(),
                    format!(
                        "spike times are not sorted (spike {} at {} s follows {} s); sort each \
                         unit's spike times before writing the file",
                        k + 1,
                        v[k + 1],
                        v[k]
                    ),
                ));
            }
        }
        offsets.push(buf.len());
        Ok(offsets)
    }
}

/// Whether every value is finite and none is below its predecessor: one branch-free pass
/// that the compiler vectorises (the error path looks for the position afterwards).
fn finite_and_sorted(v: &[f64]) -> bool {
    let Some(&first) = v.first() else {
        return true;
    };
    let mut bad = usize::from(!first.is_finite());
    for w in v.windows(2) {
        bad += usize::from(!w[1].is_finite() | (w[1] < w[0]));
    }
    bad == 0
}

/// Elements `start .. start + len` of a 1-D numeric dataset, converted to f64 by HDF5, into
/// `buf` (cleared first). One `H5Dread` into memory the caller keeps: the high-level crate
/// only reads into fresh arrays, whose page faults cost more than the read at 10⁷ spikes.
fn read_f64_range(
    ds: &hdf5::Dataset,
    start: usize,
    len: usize,
    buf: &mut Vec<f64>,
) -> Result<(), String> {
    buf.clear();
    if len == 0 {
        return Ok(());
    }
    let shape = ds.shape();
    if shape.len() != 1 || start + len > shape[0] {
        return Err(format!(
            "cannot read elements {start}..{} of a dataset of shape {shape:?}",
            start + len
        ));
    }
    let selection = hdf5::Selection::from(start..start + len);
    let fspace = ds
        .space()
        .and_then(|sp| sp.select(selection))
        .map_err(|e| e.to_string())?;
    let mspace = hdf5::Dataspace::try_new([len]).map_err(|e| e.to_string())?;
    let mem_type = hdf5::Datatype::from_type::<f64>().map_err(|e| e.to_string())?;
    let file_type = ds.dtype().map_err(|e| e.to_string())?;
    if !matches!(
        file_type.to_descriptor(),
        Ok(hdf5::types::TypeDescriptor::Float(_) | hdf5::types::TypeDescriptor::Integer(_))
    ) {
        return Err("not a numeric dataset".into());
    }
    buf.reserve(len);
    // SAFETY: `buf` has capacity for `len` f64 values, the memory space has exactly `len`
    // elements of the native double type, and HDF5 writes all of them or fails; the length is
    // set only on success. The call holds the crate's global HDF5 lock like its own reads.
    let rc = hdf5::sync::sync(|| unsafe {
        hdf5_sys::h5d::H5Dread(
            ds.id(),
            mem_type.id(),
            mspace.id(),
            fspace.id(),
            hdf5_sys::h5p::H5P_DEFAULT,
            buf.as_mut_ptr().cast(),
        )
    });
    if rc < 0 {
        return Err(format!("reading elements {start}..{} failed", start + len));
    }
    // SAFETY: H5Dread succeeded and wrote `len` elements.
    unsafe { buf.set_len(len) };
    Ok(())
}
