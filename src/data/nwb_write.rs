//! A small NWB 2.x writer: the layout pynwb writes for the parts we produce (surrogate
//! recordings and exported samples) — `units` with ragged spike times and observation
//! intervals, `intervals/trials`, TimeSeries / SpatialSeries in processing modules, and LFP as
//! an ElectricalSeries with its electrodes table, device and electrode group. Files are read by
//! `pynwb` (checked in `tests/nwb_pynwb.rs` when a Python with pynwb is configured) and by our
//! own reader.
//!
//! The file is written to `<path>.tmp` and renamed by [`NwbWriter::finish`]; dropping the
//! writer without finishing removes the temporary file, so nothing half-written stays.

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use hdf5::ObjectReference;

/// Errors writing an NWB file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: writing {object}: {message}")]
pub struct NwbWriteError {
    /// File.
    pub file: PathBuf,
    /// NWB path being written.
    pub object: String,
    /// What failed.
    pub message: String,
}

/// Values of one table column.
#[derive(Debug, Clone, Copy)]
pub enum ColumnData<'a> {
    /// Floats.
    Float(&'a [f64]),
    /// Integers.
    Int(&'a [i64]),
    /// Booleans (written as h5py's enum bool).
    Bool(&'a [bool]),
    /// Text.
    Text(&'a [String]),
}

impl ColumnData<'_> {
    fn len(&self) -> usize {
        match self {
            ColumnData::Float(v) => v.len(),
            ColumnData::Int(v) => v.len(),
            ColumnData::Bool(v) => v.len(),
            ColumnData::Text(v) => v.len(),
        }
    }
}

/// Sample times of a series to write.
#[derive(Debug, Clone, Copy)]
pub enum SeriesTiming<'a> {
    /// `starting_time` + `rate`.
    Rate {
        /// Start (s).
        start: f64,
        /// Rate (Hz).
        rate: f64,
    },
    /// Explicit timestamps (s), one per sample.
    Timestamps(&'a [f64]),
}

/// A TimeSeries to write.
#[derive(Debug, Clone, Copy)]
pub struct SeriesData<'a> {
    /// Name inside its parent group.
    pub name: &'a str,
    /// `description`.
    pub description: &'a str,
    /// `data.unit`.
    pub unit: &'a str,
    /// Stored values, sample-major (`n_samples × n_channels`).
    pub data: &'a [f64],
    /// Channels (1 writes a 1-D dataset).
    pub n_channels: usize,
    /// Sample times.
    pub timing: SeriesTiming<'a>,
    /// `data.conversion` (stored × conversion + offset = SI value).
    pub conversion: f64,
    /// `data.offset`.
    pub offset: f64,
}

/// Writes one NWB file.
pub struct NwbWriter {
    file: Option<hdf5::File>,
    path: PathBuf,
    tmp: PathBuf,
    identifier: String,
    n_objects: u64,
}

fn vlen(s: &str) -> VarLenUnicode {
    // NUL bytes cannot be stored in HDF5 text; drop them.
    s.replace('\0', "").parse().unwrap_or_default()
}

impl NwbWriter {
    /// Start a file: root attributes, the required datasets and groups of NWBFile.
    pub fn create(
        path: &Path,
        identifier: &str,
        session_description: &str,
        session_start_time: &str,
    ) -> Result<Self, NwbWriteError> {
        let tmp = path.with_extension("nwb.tmp");
        let file = hdf5::File::create(&tmp).map_err(|e| NwbWriteError {
            file: path.to_path_buf(),
            object: "/".into(),
            message: e.to_string(),
        })?;
        let mut w = Self {
            file: Some(file),
            path: path.to_path_buf(),
            tmp,
            identifier: identifier.to_string(),
            n_objects: 0,
        };
        w.init(session_description, session_start_time)?;
        Ok(w)
    }

    fn err(&self, object: &str, e: impl std::fmt::Display) -> NwbWriteError {
        NwbWriteError {
            file: self.path.clone(),
            object: object.to_string(),
            message: e.to_string(),
        }
    }

    fn f(&self) -> &hdf5::File {
        // `file` is only None after `finish`, which consumes the writer.
        self.file.as_ref().expect("NwbWriter used after finish")
    }

    /// A deterministic UUID-formatted object id (the identifier and a counter, hashed).
    fn object_id(&mut self) -> String {
        self.n_objects += 1;
        let h = blake3::hash(format!("{}#{}", self.identifier, self.n_objects).as_bytes());
        let b = h.as_bytes();
        let hex: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
        // Version 4 / variant 1 markers, as uuid4 strings look.
        format!(
            "{}-{}-4{}-a{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        )
    }

    fn set_text(&self, loc: &hdf5::Location, name: &str, value: &str) -> Result<(), NwbWriteError> {
        let a = loc
            .new_attr::<VarLenUnicode>()
            .shape(())
            .create(name)
            .map_err(|e| self.err(name, e))?;
        a.write_scalar(&vlen(value)).map_err(|e| self.err(name, e))
    }

    fn set_texts(
        &self,
        loc: &hdf5::Location,
        name: &str,
        values: &[&str],
    ) -> Result<(), NwbWriteError> {
        let a = loc
            .new_attr::<VarLenUnicode>()
            .shape([values.len()])
            .create(name)
            .map_err(|e| self.err(name, e))?;
        let v: Vec<VarLenUnicode> = values.iter().map(|s| vlen(s)).collect();
        a.write_raw(&v).map_err(|e| self.err(name, e))
    }

    fn set_num<T: hdf5::H5Type>(
        &self,
        loc: &hdf5::Location,
        name: &str,
        value: T,
    ) -> Result<(), NwbWriteError> {
        let a = loc
            .new_attr::<T>()
            .shape(())
            .create(name)
            .map_err(|e| self.err(name, e))?;
        a.write_scalar(&value).map_err(|e| self.err(name, e))
    }

    fn set_ref(&self, loc: &hdf5::Location, name: &str, target: &str) -> Result<(), NwbWriteError> {
        let r =
            hdf5::ObjectReference1::create(self.f(), target).map_err(|e| self.err(target, e))?;
        let a = loc
            .new_attr::<hdf5::ObjectReference1>()
            .shape(())
            .create(name)
            .map_err(|e| self.err(name, e))?;
        a.write_scalar(&r).map_err(|e| self.err(name, e))
    }

    fn typed(
        &mut self,
        loc: &hdf5::Location,
        neurodata_type: &str,
        namespace: &str,
    ) -> Result<(), NwbWriteError> {
        self.set_text(loc, "neurodata_type", neurodata_type)?;
        self.set_text(loc, "namespace", namespace)?;
        let id = self.object_id();
        self.set_text(loc, "object_id", &id)
    }

    fn group(&self, path: &str) -> Result<hdf5::Group, NwbWriteError> {
        match self.f().group(path) {
            Ok(g) => Ok(g),
            Err(_) => self.f().create_group(path).map_err(|e| self.err(path, e)),
        }
    }

    fn text_dataset(
        &self,
        g: &hdf5::Group,
        name: &str,
        values: &[&str],
    ) -> Result<hdf5::Dataset, NwbWriteError> {
        let ds = g
            .new_dataset::<VarLenUnicode>()
            .shape([values.len()])
            .create(name)
            .map_err(|e| self.err(name, e))?;
        let v: Vec<VarLenUnicode> = values.iter().map(|s| vlen(s)).collect();
        ds.write_raw(&v).map_err(|e| self.err(name, e))?;
        Ok(ds)
    }

    fn scalar_text_dataset(
        &self,
        g: &hdf5::Group,
        name: &str,
        value: &str,
    ) -> Result<(), NwbWriteError> {
        let ds = g
            .new_dataset::<VarLenUnicode>()
            .shape(())
            .create(name)
            .map_err(|e| self.err(name, e))?;
        ds.write_scalar(&vlen(value)).map_err(|e| self.err(name, e))
    }

    fn num_dataset<T: hdf5::H5Type>(
        &self,
        g: &hdf5::Group,
        name: &str,
        values: &[T],
        shape: &[usize],
    ) -> Result<hdf5::Dataset, NwbWriteError> {
        let ds = g
            .new_dataset::<T>()
            .shape(shape)
            .create(name)
            .map_err(|e| self.err(name, e))?;
        if !values.is_empty() {
            ds.write_raw(values).map_err(|e| self.err(name, e))?;
        }
        Ok(ds)
    }

    fn init(&mut self, session_description: &str, start: &str) -> Result<(), NwbWriteError> {
        let root = self.f().group("/").map_err(|e| self.err("/", e))?;
        self.set_text(&root, "nwb_version", "2.7.0")?;
        self.typed(&root, "NWBFile", "core")?;
        let ident = self.identifier.clone();
        self.scalar_text_dataset(&root, "identifier", &ident)?;
        self.scalar_text_dataset(&root, "session_description", session_description)?;
        self.scalar_text_dataset(&root, "session_start_time", start)?;
        self.scalar_text_dataset(&root, "timestamps_reference_time", start)?;
        self.text_dataset(&root, "file_create_date", &[start])?;
        for g in [
            "acquisition",
            "analysis",
            "processing",
            "stimulus",
            "stimulus/presentation",
            "stimulus/templates",
            "general",
        ] {
            self.group(g)?;
        }
        Ok(())
    }

    /// `general/subject` (nwbinspector wants one): id, species (Latin binomial), sex (M, F,
    /// U), age (ISO 8601 duration, e.g. P90D).
    pub fn subject(
        &mut self,
        subject_id: &str,
        species: &str,
        sex: &str,
        age: &str,
    ) -> Result<(), NwbWriteError> {
        let g = self.group("general/subject")?;
        self.typed(&g, "Subject", "core")?;
        self.scalar_text_dataset(&g, "subject_id", subject_id)?;
        self.scalar_text_dataset(&g, "species", species)?;
        self.scalar_text_dataset(&g, "sex", sex)?;
        self.scalar_text_dataset(&g, "age", age)
    }

    /// `general/notes` (free text; surrogates write `data_source=surrogate; …`).
    pub fn notes(&mut self, text: &str) -> Result<(), NwbWriteError> {
        let g = self.group("general")?;
        self.scalar_text_dataset(&g, "notes", text)
    }

    /// A processing module (`processing/<name>`), created once.
    pub fn processing_module(
        &mut self,
        name: &str,
        description: &str,
    ) -> Result<String, NwbWriteError> {
        let p = format!("processing/{name}");
        if self.f().link_exists(&p) {
            return Ok(p);
        }
        let g = self.group(&p)?;
        self.set_text(&g, "description", description)?;
        self.typed(&g, "ProcessingModule", "core")?;
        Ok(p)
    }

    fn vector_data(
        &mut self,
        g: &hdf5::Group,
        name: &str,
        description: &str,
        data: ColumnData<'_>,
        width: usize,
    ) -> Result<(), NwbWriteError> {
        let n = data.len() / width.max(1);
        let shape: Vec<usize> = if width > 1 {
            vec![n, width]
        } else {
            vec![data.len()]
        };
        let ds = match data {
            ColumnData::Float(v) => self.num_dataset(g, name, v, &shape)?,
            ColumnData::Int(v) => self.num_dataset(g, name, v, &shape)?,
            ColumnData::Bool(v) => self.num_dataset(g, name, v, &shape)?,
            ColumnData::Text(v) => {
                let r: Vec<&str> = v.iter().map(String::as_str).collect();
                self.text_dataset(g, name, &r)?
            }
        };
        self.set_text(&ds, "description", description)?;
        self.typed(&ds, "VectorData", "hdmf-common")
    }

    fn vector_index(
        &mut self,
        g: &hdf5::Group,
        table_path: &str,
        name: &str,
        ends: &[u64],
    ) -> Result<(), NwbWriteError> {
        let ds = self.num_dataset(g, &format!("{name}_index"), ends, &[ends.len()])?;
        self.set_text(
            &ds,
            "description",
            &format!("Index for VectorData '{name}'"),
        )?;
        self.set_ref(&ds, "target", &format!("{table_path}/{name}"))?;
        self.typed(&ds, "VectorIndex", "hdmf-common")
    }

    fn ids(&mut self, g: &hdf5::Group, ids: &[i64]) -> Result<(), NwbWriteError> {
        let ds = self.num_dataset(g, "id", ids, &[ids.len()])?;
        self.typed(&ds, "ElementIdentifiers", "hdmf-common")
    }

    /// The `units` table: ragged spike times (sorted per unit), optional observation
    /// intervals, the spike-time resolution (s) and extra scalar columns (e.g. NLB's
    /// `heldout`).
    pub fn write_units(
        &mut self,
        ids: &[i64],
        spikes: &[Vec<f64>],
        obs_intervals: Option<&[Vec<(f64, f64)>]>,
        resolution: Option<f64>,
        extra: &[(&str, &str, ColumnData<'_>)],
    ) -> Result<(), NwbWriteError> {
        let g = self.group("units")?;
        self.set_text(&g, "description", "units table")?;
        let mut colnames = vec!["spike_times"];
        if obs_intervals.is_some() {
            colnames.push("obs_intervals");
        }
        colnames.extend(extra.iter().map(|(n, _, _)| *n));
        self.set_texts(&g, "colnames", &colnames)?;
        self.typed(&g, "Units", "core")?;
        self.ids(&g, ids)?;
        let flat: Vec<f64> = spikes.iter().flatten().copied().collect();
        let mut ends = Vec::with_capacity(spikes.len());
        let mut acc = 0u64;
        for s in spikes {
            acc += s.len() as u64;
            ends.push(acc);
        }
        self.vector_data(
            &g,
            "spike_times",
            "the spike times for each unit in seconds",
            ColumnData::Float(&flat),
            1,
        )?;
        if let Some(r) = resolution {
            let ds = g
                .dataset("spike_times")
                .map_err(|e| self.err("units/spike_times", e))?;
            self.set_num(&ds, "resolution", r)?;
        }
        self.vector_index(&g, "units", "spike_times", &ends)?;
        if let Some(iv) = obs_intervals {
            let flat: Vec<f64> = iv.iter().flatten().flat_map(|&(a, b)| [a, b]).collect();
            let mut ends = Vec::with_capacity(iv.len());
            let mut acc = 0u64;
            for u in iv {
                acc += u.len() as u64;
                ends.push(acc);
            }
            self.vector_data(
                &g,
                "obs_intervals",
                "the observation intervals for each unit",
                ColumnData::Float(&flat),
                2,
            )?;
            self.vector_index(&g, "units", "obs_intervals", &ends)?;
        }
        self.extra_columns(&g, "units", ids.len(), extra)
    }

    /// Scalar columns beside a table's own, each with one value per row.
    fn extra_columns(
        &mut self,
        g: &hdf5::Group,
        table: &str,
        n_rows: usize,
        extra: &[(&str, &str, ColumnData<'_>)],
    ) -> Result<(), NwbWriteError> {
        for (name, desc, data) in extra {
            if data.len() != n_rows {
                return Err(self.err(
                    &format!("{table}/{name}"),
                    format!("{} values for {n_rows} rows", data.len()),
                ));
            }
            self.vector_data(g, name, desc, *data, 1)?;
        }
        Ok(())
    }

    /// `intervals/trials`: `start_time` and `stop_time` first, then the other columns.
    pub fn write_trials(
        &mut self,
        start: &[f64],
        stop: &[f64],
        extra: &[(&str, &str, ColumnData<'_>)],
    ) -> Result<(), NwbWriteError> {
        let g = self.group("intervals/trials")?;
        self.set_text(&g, "description", "experimental trials")?;
        let mut colnames = vec!["start_time", "stop_time"];
        colnames.extend(extra.iter().map(|(n, _, _)| *n));
        self.set_texts(&g, "colnames", &colnames)?;
        self.typed(&g, "TimeIntervals", "core")?;
        let ids: Vec<i64> = (0..start.len() as i64).collect();
        self.ids(&g, &ids)?;
        self.vector_data(
            &g,
            "start_time",
            "Start time of epoch, in seconds",
            ColumnData::Float(start),
            1,
        )?;
        self.vector_data(
            &g,
            "stop_time",
            "Stop time of epoch, in seconds",
            ColumnData::Float(stop),
            1,
        )?;
        self.extra_columns(&g, "intervals/trials", start.len(), extra)
    }

    fn series_body(&mut self, g: &hdf5::Group, s: &SeriesData<'_>) -> Result<(), NwbWriteError> {
        let n = s.data.len() / s.n_channels.max(1);
        let shape: Vec<usize> = if s.n_channels > 1 {
            vec![n, s.n_channels]
        } else {
            vec![n]
        };
        let ds = self.num_dataset(g, "data", s.data, &shape)?;
        self.set_num(&ds, "conversion", s.conversion as f32)?;
        self.set_num(&ds, "offset", s.offset as f32)?;
        self.set_num(&ds, "resolution", -1.0f32)?;
        self.set_text(&ds, "unit", s.unit)?;
        match s.timing {
            SeriesTiming::Rate { start, rate } => {
                let st = g
                    .new_dataset::<f64>()
                    .shape(())
                    .create("starting_time")
                    .map_err(|e| self.err("starting_time", e))?;
                st.write_scalar(&start)
                    .map_err(|e| self.err("starting_time", e))?;
                self.set_num(&st, "rate", rate as f32)?;
                self.set_text(&st, "unit", "seconds")?;
            }
            SeriesTiming::Timestamps(t) => {
                if t.len() != n {
                    return Err(self.err(s.name, format!("{} timestamps for {n} samples", t.len())));
                }
                let ts = self.num_dataset(g, "timestamps", t, &[n])?;
                self.set_num(&ts, "interval", 1i32)?;
                self.set_text(&ts, "unit", "seconds")?;
            }
        }
        self.set_text(g, "description", s.description)?;
        self.set_text(g, "comments", "no comments")?;
        Ok(())
    }

    /// A TimeSeries (or `neurodata_type = SpatialSeries`) at `<parent>/<name>`.
    pub fn write_series(
        &mut self,
        parent: &str,
        neurodata_type: &str,
        s: &SeriesData<'_>,
    ) -> Result<String, NwbWriteError> {
        let p = format!("{parent}/{}", s.name);
        let g = self.group(&p)?;
        self.series_body(&g, s)?;
        self.typed(&g, neurodata_type, "core")?;
        Ok(p)
    }

    /// Position as a SpatialSeries at `processing/behavior/Position/<name>`, where `bin
    /// --behavior` and pynwb look for it.
    pub fn write_position(&mut self, s: &SeriesData<'_>) -> Result<String, NwbWriteError> {
        let pm = self.processing_module("behavior", "behavioural data")?;
        let pc = self.container(&pm, "Position", "Position")?;
        self.write_series(&pc, "SpatialSeries", s)
    }

    /// A container group of a MultiContainerInterface type (`Position`, `LFP`, …).
    pub fn container(
        &mut self,
        parent: &str,
        name: &str,
        neurodata_type: &str,
    ) -> Result<String, NwbWriteError> {
        let p = format!("{parent}/{name}");
        let g = self.group(&p)?;
        self.typed(&g, neurodata_type, "core")?;
        Ok(p)
    }

    /// LFP: a device, an electrode group, the electrodes table (one row per channel, at
    /// `location`) and `processing/ecephys/LFP/<name>` as an ElectricalSeries over them.
    pub fn write_lfp(
        &mut self,
        s: &SeriesData<'_>,
        location: &str,
    ) -> Result<String, NwbWriteError> {
        let dev = self.group("general/devices/probe")?;
        self.set_text(&dev, "description", "recording probe")?;
        self.typed(&dev, "Device", "core")?;
        let eg = self.group("general/extracellular_ephys/shank0")?;
        self.set_text(&eg, "description", "electrode group of the probe")?;
        self.set_text(&eg, "location", location)?;
        self.typed(&eg, "ElectrodeGroup", "core")?;
        eg.link_soft("/general/devices/probe", "device")
            .map_err(|e| self.err("general/extracellular_ephys/shank0/device", e))?;
        let et = self.group("general/extracellular_ephys/electrodes")?;
        self.set_text(
            &et,
            "description",
            "metadata about extracellular electrodes",
        )?;
        self.set_texts(&et, "colnames", &["location", "group", "group_name"])?;
        self.typed(&et, "DynamicTable", "hdmf-common")?;
        let n_ch = s.n_channels.max(1);
        let ids: Vec<i64> = (0..n_ch as i64).collect();
        self.ids(&et, &ids)?;
        let locs = vec![location.to_string(); n_ch];
        self.vector_data(
            &et,
            "location",
            "the location of channel within the subject e.g. brain region",
            ColumnData::Text(&locs),
            1,
        )?;
        let r = hdf5::ObjectReference1::create(self.f(), "general/extracellular_ephys/shank0")
            .map_err(|e| self.err("general/extracellular_ephys/shank0", e))?;
        let refs = vec![r; n_ch];
        let gd = et
            .new_dataset::<hdf5::ObjectReference1>()
            .shape([n_ch])
            .create("group")
            .map_err(|e| self.err("electrodes/group", e))?;
        gd.write_raw(&refs)
            .map_err(|e| self.err("electrodes/group", e))?;
        self.set_text(
            &gd,
            "description",
            "a reference to the ElectrodeGroup this electrode is a part of",
        )?;
        self.typed(&gd, "VectorData", "hdmf-common")?;
        let names = vec!["shank0".to_string(); n_ch];
        self.vector_data(
            &et,
            "group_name",
            "the name of the ElectrodeGroup this electrode is a part of",
            ColumnData::Text(&names),
            1,
        )?;
        let pm =
            self.processing_module("ecephys", "processed extracellular electrophysiology data")?;
        let lfp = self.container(&pm, "LFP", "LFP")?;
        let p = format!("{lfp}/{}", s.name);
        let g = self.group(&p)?;
        self.series_body(&g, s)?;
        let region = self.num_dataset(&g, "electrodes", &ids, &[n_ch])?;
        self.set_text(&region, "description", "the electrodes of this series")?;
        self.set_ref(&region, "table", "general/extracellular_ephys/electrodes")?;
        self.typed(&region, "DynamicTableRegion", "hdmf-common")?;
        self.typed(&g, "ElectricalSeries", "core")?;
        Ok(p)
    }

    /// Close the file and move it into place.
    pub fn finish(mut self) -> Result<(), NwbWriteError> {
        if let Some(f) = self.file.take() {
            f.close().map_err(|e| self.err("/", e))?;
        }
        std::fs::rename(&self.tmp, &self.path).map_err(|e| self.err("/", e))
    }
}

/// Export a sequences file (e.g. a model's generated trajectories) as NWB: each sequence
/// becomes a TimeSeries `processing/lowrank_smc/sequence_<k>` (time × channels) sampled at
/// `rate_hz`, with the source file and its `data_source` in `general/notes`.
pub fn export_sequences(
    seq: &crate::model::Sequences<f64>,
    out: &Path,
    rate_hz: f64,
    unit: &str,
    description: &str,
) -> Result<(), NwbWriteError> {
    if !(rate_hz.is_finite() && rate_hz > 0.0) {
        return Err(NwbWriteError {
            file: out.to_path_buf(),
            object: "rate".into(),
            message: format!("{rate_hz}: the sampling rate must be > 0 Hz"),
        });
    }
    let mut w = NwbWriter::create(
        out,
        &format!(
            "lowrank-smc-export-{}",
            blake3::hash(description.as_bytes()).to_hex()
        ),
        description,
        "2024-01-01T00:00:00+00:00",
    )?;
    w.notes(description)?;
    let pm = w.processing_module("lowrank_smc", "sequences exported by lowrank-smc")?;
    let (d, t) = (seq.dim_x, seq.n_time);
    let mut buf = vec![0.0; t * d];
    for k in 0..seq.n_sequences {
        let x = seq.x_of(k);
        // Sequences are channel-major (dim × T); NWB series are time-major (T × channels).
        for c in 0..d {
            for i in 0..t {
                buf[i * d + c] = x[c * t + i];
            }
        }
        let name = format!("sequence_{k}");
        w.write_series(
            &pm,
            "TimeSeries",
            &SeriesData {
                name: &name,
                description: "one exported sequence (time × channels)",
                unit,
                data: &buf,
                n_channels: d,
                timing: SeriesTiming::Rate {
                    start: 0.0,
                    rate: rate_hz,
                },
                conversion: 1.0,
                offset: 0.0,
            },
        )?;
    }
    w.finish()
}

impl Drop for NwbWriter {
    fn drop(&mut self) {
        if let Some(f) = self.file.take() {
            drop(f);
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
