//! CRCNS hippocampus sessions (hc-2, hc-11: Neuroscope / KlustaKwik files) → NWB, so the real
//! recordings run through the same `bin` stage as any NWB file (SPEC §5.3–5.4).
//!
//! A session `BASE` is the set of files the Buzsáki lab distributes:
//!
//! | file | content |
//! |---|---|
//! | `BASE.xml` | Neuroscope parameters: `nChannels`, `samplingRate` (spikes), `lfpSamplingRate` |
//! | `BASE.res.K` | spike times of shank K, one integer per line, in samples at `samplingRate` |
//! | `BASE.clu.K` | the cluster of each spike: first line the number of clusters, then one id per spike (0 = artefact, 1 = noise / multi-unit, ≥ 2 = units) |
//! | `BASE.eeg` | LFP, int16, channels interleaved, at `lfpSamplingRate` (1250 Hz) |
//! | `BASE.whl` | position, one line per video frame (39.0625 Hz): x y [x2 y2], −1 where tracking was lost |
//!
//! Units are the clusters ≥ 2 of every shank (as the reference selects them), with id
//! 1000·shank + cluster and `shank` / `cluster` columns; the LFP keeps the requested channels
//! (raw ADC values, `conversion` as given); lost position samples become NaN. Files are read
//! line by line / in blocks, so memory is bounded by the output.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::data::nwb_write::{ColumnData, NwbWriter, SeriesData, SeriesTiming};

/// Errors converting a CRCNS session.
#[derive(Debug, thiserror::Error)]
pub enum CrcnsError {
    /// A file is missing or unreadable, or its content is malformed.
    #[error("{file}: {message}")]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Writing the NWB file failed.
    #[error(transparent)]
    Write(#[from] crate::data::nwb_write::NwbWriteError),
}

fn file_err(file: &Path, message: impl Into<String>) -> CrcnsError {
    CrcnsError::File {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

/// Conversion settings; `None` fields come from `BASE.xml` (also the `convert-crcns` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct CrcnsOptions {
    /// Spike sampling rate in Hz [default: BASE.xml's samplingRate].
    #[arg(long)]
    pub sampling_rate: Option<f64>,
    /// LFP sampling rate in Hz [default: BASE.xml's lfpSamplingRate, else 1250].
    #[arg(long)]
    pub lfp_rate: Option<f64>,
    /// Channels in BASE.eeg [default: BASE.xml's nChannels].
    #[arg(long)]
    pub n_channels: Option<usize>,
    /// LFP channels to keep, 0-based, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    pub lfp_channels: Option<Vec<usize>>,
    /// Volts per int16 LFP unit (NWB `conversion`; 1 keeps ADC units).
    #[arg(long, default_value_t = 1.0)]
    pub lfp_conversion: f64,
    /// Position frame rate in Hz (Neuroscope: 20000 / 512).
    #[arg(long, default_value_t = 39.0625)]
    pub position_rate: f64,
    /// Label written to `general/notes` as `data_source=…`, carried into every table.
    #[arg(long, default_value = DEFAULT_SOURCE)]
    pub data_source: String,
}

const DEFAULT_SOURCE: &str = "real (CRCNS, converted from Neuroscope/KlustaKwik files)";

impl Default for CrcnsOptions {
    fn default() -> Self {
        Self {
            sampling_rate: None,
            lfp_rate: None,
            n_channels: None,
            lfp_channels: None,
            lfp_conversion: 1.0,
            position_rate: 20_000.0 / 512.0,
            data_source: DEFAULT_SOURCE.into(),
        }
    }
}

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct CrcnsSummary {
    /// Shanks found.
    pub shanks: Vec<usize>,
    /// Units written (clusters ≥ 2).
    pub n_units: usize,
    /// Spikes of those units.
    pub n_spikes: usize,
    /// LFP samples per channel (0 without `.eeg`).
    pub lfp_samples: usize,
    /// Position frames (0 without `.whl`).
    pub position_frames: usize,
}

/// `<tag>value</tag>` of the first occurrence inside `section` (or anywhere).
fn xml_value(text: &str, section: Option<&str>, tag: &str) -> Option<String> {
    let scope = match section {
        Some(s) => {
            let open = format!("<{s}>");
            let close = format!("</{s}>");
            let a = text.find(&open)? + open.len();
            let b = a + text[a..].find(&close)?;
            &text[a..b]
        }
        None => text,
    };
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let a = scope.find(&open)? + open.len();
    let b = a + scope[a..].find(&close)?;
    Some(scope[a..b].trim().to_string())
}

fn path_with(base: &Path, suffix: &str) -> PathBuf {
    let mut s = base.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The session's parameters: options first, then `BASE.xml`.
fn parameters(base: &Path, opts: &CrcnsOptions) -> Result<(f64, f64, usize), CrcnsError> {
    let xml = path_with(base, ".xml");
    let text = if xml.is_file() {
        Some(std::fs::read_to_string(&xml).map_err(|e| file_err(&xml, e.to_string()))?)
    } else {
        None
    };
    let from_xml = |section: Option<&str>, tag: &str| -> Option<String> {
        text.as_deref().and_then(|t| xml_value(t, section, tag))
    };
    let number = |v: Option<f64>, section: Option<&str>, tag: &str, flag: &str| match v {
        Some(v) => Ok(v),
        None => from_xml(section, tag)
            .ok_or_else(|| {
                file_err(
                    &xml,
                    format!(
                        "no <{tag}> here (or no such file); pass {flag} or add the Neuroscope \
                             parameter file"
                    ),
                )
            })?
            .parse::<f64>()
            .map_err(|e| file_err(&xml, format!("<{tag}>: {e}"))),
    };
    let fs = number(
        opts.sampling_rate,
        Some("acquisitionSystem"),
        "samplingRate",
        "--sampling-rate",
    )?;
    let lfp = number(
        opts.lfp_rate,
        Some("fieldPotentials"),
        "lfpSamplingRate",
        "--lfp-rate",
    )
    .unwrap_or(1250.0);
    let nch = number(
        opts.n_channels.map(|n| n as f64),
        Some("acquisitionSystem"),
        "nChannels",
        "--n-channels",
    )?;
    if !(fs > 0.0 && fs.is_finite()) {
        return Err(file_err(&xml, format!("sampling rate {fs} must be > 0")));
    }
    if !(nch >= 1.0 && nch.fract() == 0.0) {
        return Err(file_err(
            &xml,
            format!("nChannels {nch} must be a whole number ≥ 1"),
        ));
    }
    Ok((fs, lfp, nch as usize))
}

/// Shanks with both `.res.K` and `.clu.K`.
fn shanks(base: &Path) -> Result<Vec<usize>, CrcnsError> {
    let dir = match base.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = base
        .file_name()
        .and_then(|s| s.to_str())
        .ok_or_else(|| file_err(base, "the session base name is not valid UTF-8"))?;
    let prefix = format!("{stem}.res.");
    let mut found = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| file_err(&dir, e.to_string()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(k) = name
            .strip_prefix(&prefix)
            .and_then(|k| k.parse::<usize>().ok())
        {
            if path_with(base, &format!(".clu.{k}")).is_file() {
                found.push(k);
            }
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Spike times (s) per cluster ≥ 2 of one shank.
fn read_shank(base: &Path, k: usize, fs: f64) -> Result<BTreeMap<i64, Vec<f64>>, CrcnsError> {
    let res_path = path_with(base, &format!(".res.{k}"));
    let clu_path = path_with(base, &format!(".clu.{k}"));
    let open = |p: &Path| -> Result<BufReader<std::fs::File>, CrcnsError> {
        std::fs::File::open(p)
            .map(BufReader::new)
            .map_err(|e| file_err(p, e.to_string()))
    };
    let mut res = open(&res_path)?.lines();
    let mut clu = open(&clu_path)?.lines();
    let header = clu
        .next()
        .ok_or_else(|| {
            file_err(
                &clu_path,
                "empty; the first line must be the number of clusters",
            )
        })?
        .map_err(|e| file_err(&clu_path, e.to_string()))?;
    header.trim().parse::<u64>().map_err(|_| {
        file_err(
            &clu_path,
            format!(
                "line 1 `{}`: expected the number of clusters",
                header.trim()
            ),
        )
    })?;
    let mut units: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    let mut line = 0usize;
    loop {
        line += 1;
        match (res.next(), clu.next()) {
            (None, None) => break,
            (Some(r), Some(c)) => {
                let r = r.map_err(|e| file_err(&res_path, e.to_string()))?;
                let c = c.map_err(|e| file_err(&clu_path, e.to_string()))?;
                let t: u64 = r.trim().parse().map_err(|_| {
                    file_err(
                        &res_path,
                        format!("line {line} `{}`: expected a sample index", r.trim()),
                    )
                })?;
                let id: i64 = c.trim().parse().map_err(|_| {
                    file_err(
                        &clu_path,
                        format!("line {} `{}`: expected a cluster id", line + 1, c.trim()),
                    )
                })?;
                if id >= 2 {
                    units.entry(id).or_default().push(t as f64 / fs);
                }
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(file_err(
                    &res_path,
                    format!(
                        "{} and {} disagree in length at spike {line}: every spike time needs a \
                         cluster id (is one of them truncated?)",
                        res_path.display(),
                        clu_path.display()
                    ),
                ))
            }
        }
    }
    for times in units.values_mut() {
        times.sort_by(f64::total_cmp);
    }
    Ok(units)
}

/// The kept channels of `BASE.eeg` as f64 (sample-major), read in blocks.
fn read_eeg(path: &Path, n_channels: usize, keep: &[usize]) -> Result<Vec<f64>, CrcnsError> {
    let len = std::fs::metadata(path)
        .map_err(|e| file_err(path, e.to_string()))?
        .len();
    let frame = 2 * n_channels as u64;
    if len % frame != 0 {
        return Err(file_err(
            path,
            format!(
                "{len} bytes is not a whole number of {n_channels}-channel int16 frames; check \
                 nChannels (--n-channels) or whether the file is truncated"
            ),
        ));
    }
    let n = (len / frame) as usize;
    let mut out = Vec::with_capacity(n * keep.len());
    let mut reader = BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(path).map_err(|e| file_err(path, e.to_string()))?,
    );
    let frames_per_block = 4096;
    let mut buf = vec![0u8; frames_per_block * frame as usize];
    let mut left = n;
    while left > 0 {
        let m = left.min(frames_per_block);
        let bytes = &mut buf[..m * frame as usize];
        reader
            .read_exact(bytes)
            .map_err(|e| file_err(path, e.to_string()))?;
        for f in 0..m {
            for &c in keep {
                let at = (f * n_channels + c) * 2;
                out.push(i16::from_le_bytes([bytes[at], bytes[at + 1]]) as f64);
            }
        }
        left -= m;
    }
    Ok(out)
}

/// `BASE.whl`: frames × columns, −1 → NaN.
fn read_whl(path: &Path) -> Result<(Vec<f64>, usize), CrcnsError> {
    let reader =
        BufReader::new(std::fs::File::open(path).map_err(|e| file_err(path, e.to_string()))?);
    let mut data = Vec::new();
    let mut cols = 0;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| file_err(path, e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Result<Vec<f64>, _> = line.split_whitespace().map(str::parse::<f64>).collect();
        let row = row.map_err(|_| file_err(path, format!("line {}: expected numbers", i + 1)))?;
        if cols == 0 {
            cols = row.len();
        } else if row.len() != cols {
            return Err(file_err(
                path,
                format!(
                    "line {}: {} columns, earlier lines have {cols}",
                    i + 1,
                    row.len()
                ),
            ));
        }
        data.extend(
            row.into_iter()
                .map(|v| if v == -1.0 { f64::NAN } else { v }),
        );
    }
    Ok((data, cols))
}

/// Converts session `base` (e.g. `ec013.527/ec013.527`) into the NWB file `out`.
pub fn convert_session(
    base: &Path,
    out: &Path,
    opts: &CrcnsOptions,
) -> Result<CrcnsSummary, CrcnsError> {
    let (fs, lfp_rate, n_channels) = parameters(base, opts)?;
    let shank_ids = shanks(base)?;
    if shank_ids.is_empty() {
        return Err(file_err(
            base,
            "no spike files: expected BASE.res.K and BASE.clu.K (K = shank number) next to it",
        ));
    }
    let mut ids = Vec::new();
    let mut spikes = Vec::new();
    let mut shank_col = Vec::new();
    let mut cluster_col = Vec::new();
    for &k in &shank_ids {
        for (cluster, times) in read_shank(base, k, fs)? {
            ids.push(1000 * k as i64 + cluster);
            spikes.push(times);
            shank_col.push(k as i64);
            cluster_col.push(cluster);
        }
    }
    let n_spikes = spikes.iter().map(Vec::len).sum();
    let stem = base
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut w = NwbWriter::create(
        out,
        &format!("crcns-{stem}"),
        &format!("CRCNS session {stem}, converted from Neuroscope/KlustaKwik files by lowrank-smc"),
        "1970-01-01T00:00:00+00:00",
    )?;
    w.notes(&format!(
        "data_source={}; converted by lowrank-smc convert-crcns from {}; spike sampling rate {fs} Hz; units are clusters >= 2 (id = 1000*shank + cluster)",
        opts.data_source,
        base.display()
    ))?;
    w.write_units(
        &ids,
        &spikes,
        None,
        Some(1.0 / fs),
        &[
            (
                "shank",
                "shank (electrode group) number",
                ColumnData::Int(&shank_col),
            ),
            (
                "cluster",
                "KlustaKwik cluster id",
                ColumnData::Int(&cluster_col),
            ),
        ],
    )?;
    let mut position_frames = 0;
    let whl = path_with(base, ".whl");
    if whl.is_file() {
        let (pos, cols) = read_whl(&whl)?;
        if let Some(frames) = pos.len().checked_div(cols) {
            position_frames = frames;
            w.write_position(&SeriesData {
                name: "position",
                description:
                    "head position from the .whl file (x y [x2 y2]); NaN where tracking was lost",
                unit: "pixels",
                data: &pos,
                n_channels: cols,
                timing: SeriesTiming::Rate {
                    start: 0.0,
                    rate: opts.position_rate,
                },
                conversion: 1.0,
                offset: 0.0,
            })?;
        }
    }
    let mut lfp_samples = 0;
    let eeg = path_with(base, ".eeg");
    if eeg.is_file() {
        let keep: Vec<usize> = match &opts.lfp_channels {
            Some(ch) => {
                if let Some(&bad) = ch.iter().find(|&&c| c >= n_channels) {
                    return Err(file_err(
                        &eeg,
                        format!("--lfp-channels: channel {bad} out of range (the file has {n_channels})"),
                    ));
                }
                ch.clone()
            }
            None => (0..n_channels).collect(),
        };
        if !keep.is_empty() {
            let data = read_eeg(&eeg, n_channels, &keep)?;
            lfp_samples = data.len() / keep.len();
            w.write_lfp(
                &SeriesData {
                    name: "lfp",
                    description: "LFP from the .eeg file (int16 ADC values × conversion)",
                    unit: "volts",
                    data: &data,
                    n_channels: keep.len(),
                    timing: SeriesTiming::Rate {
                        start: 0.0,
                        rate: lfp_rate,
                    },
                    conversion: opts.lfp_conversion,
                    offset: 0.0,
                },
                "hippocampus",
            )?;
        }
    }
    w.finish()?;
    Ok(CrcnsSummary {
        shanks: shank_ids,
        n_units: ids.len(),
        n_spikes,
        lfp_samples,
        position_frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_values_are_read_from_their_section() {
        let xml = "<parameters><acquisitionSystem><nBits>16</nBits><nChannels>31</nChannels>\
                   <samplingRate>20000</samplingRate></acquisitionSystem><fieldPotentials>\
                   <lfpSamplingRate>1250</lfpSamplingRate></fieldPotentials></parameters>";
        assert_eq!(
            xml_value(xml, Some("acquisitionSystem"), "nChannels").as_deref(),
            Some("31")
        );
        assert_eq!(
            xml_value(xml, Some("fieldPotentials"), "lfpSamplingRate").as_deref(),
            Some("1250")
        );
        assert_eq!(xml_value(xml, Some("fieldPotentials"), "nChannels"), None);
    }
}
