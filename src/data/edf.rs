//! EDF / EDF+ reader (European Data Format; PhysioNet's EEG Motor Movement/Imagery files,
//! e.g. S001R01.edf: 64 EEG channels at 160 Hz plus an "EDF Annotations" signal).
//!
//! The header is ASCII (256 bytes, then 256 bytes per signal); data records hold each signal's
//! `samples_per_record` little-endian i16 values in turn. Physical value =
//! (digital − dig_min) · (phys_max − phys_min) / (dig_max − dig_min) + phys_min.
//! EDF+ annotation signals are skipped; the ordinary signals must share one sampling rate.
//! Every error names the file and the header field or record.

use std::path::{Path, PathBuf};

/// Errors reading an EDF file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct EdfError {
    /// File.
    pub file: PathBuf,
    /// Header field or data record.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A read EDF recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Edf {
    /// Channel labels (annotation signals excluded).
    pub labels: Vec<String>,
    /// Physical dimension per channel (e.g. `uV`).
    pub units: Vec<String>,
    /// Sampling rate (Hz).
    pub rate: f64,
    /// Samples per channel.
    pub n_samples: usize,
    /// Values, channel-major (`channels × n_samples`), physical units.
    pub data: Vec<f64>,
    /// Start date and time as written (`dd.mm.yy hh.mm.ss`).
    pub start: String,
}

struct Signal {
    label: String,
    unit: String,
    phys_min: f64,
    phys_max: f64,
    dig_min: f64,
    dig_max: f64,
    per_record: usize,
    annotation: bool,
}

/// Read an EDF or EDF+ file.
pub fn read_edf(path: &Path) -> Result<Edf, EdfError> {
    let err = |field: &str, message: String| EdfError {
        file: path.to_path_buf(),
        field: field.to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err("file", e.to_string()))?;
    if bytes.len() < 256 {
        return Err(err(
            "header",
            format!("{} bytes: an EDF header is at least 256 bytes", bytes.len()),
        ));
    }
    let text =
        |a: usize, b: usize| -> String { String::from_utf8_lossy(&bytes[a..b]).trim().to_string() };
    if text(0, 8) != "0" {
        return Err(err(
            "version",
            format!("{:?}: EDF files start with version \"0\"", text(0, 8)),
        ));
    }
    let num = |field: &str, a: usize, b: usize| -> Result<f64, EdfError> {
        let s = text(a, b);
        s.parse::<f64>()
            .map_err(|_| err(field, format!("{s:?} is not a number")))
    };
    let header_bytes = num("header_bytes", 184, 192)? as usize;
    let n_records_field = num("n_records", 236, 244)? as i64;
    let record_s = num("record_duration", 244, 252)?;
    let ns = num("n_signals", 252, 256)? as usize;
    if ns == 0 || header_bytes != 256 * (ns + 1) {
        return Err(err(
            "n_signals",
            format!("{ns} signals but a {header_bytes}-byte header (expected 256 × (n + 1))"),
        ));
    }
    if bytes.len() < header_bytes {
        return Err(err(
            "header",
            "the file ends inside the signal headers".into(),
        ));
    }
    if !(record_s.is_finite() && record_s > 0.0) {
        return Err(err("record_duration", format!("{record_s}: must be > 0")));
    }
    let field = |k: usize, width: usize, i: usize| -> (usize, usize) {
        // Offsets of the per-signal arrays: label 16, transducer 80, dim 8, pmin 8, pmax 8,
        // dmin 8, dmax 8, prefilter 80, samples 8, reserved 32.
        let before: usize = [16, 80, 8, 8, 8, 8, 8, 80, 8, 32][..k].iter().sum();
        let a = 256 + before * ns + i * width;
        (a, a + width)
    };
    let mut signals = Vec::with_capacity(ns);
    for i in 0..ns {
        let (a, b) = field(0, 16, i);
        let label = text(a, b);
        let (a, b) = field(2, 8, i);
        let unit = text(a, b);
        let f = |k: usize, name: &str| -> Result<f64, EdfError> {
            let (a, b) = field(k, 8, i);
            num(&format!("signal {i} ({label}) {name}"), a, b)
        };
        let s = Signal {
            annotation: label.starts_with("EDF Annotations"),
            phys_min: f(3, "physical_min")?,
            phys_max: f(4, "physical_max")?,
            dig_min: f(5, "digital_min")?,
            dig_max: f(6, "digital_max")?,
            per_record: f(8, "samples_per_record")? as usize,
            label,
            unit,
        };
        if !s.annotation && (s.dig_max <= s.dig_min || s.per_record == 0) {
            return Err(err(
                &format!("signal {i} ({})", s.label),
                format!(
                    "digital range [{}, {}] / {} samples per record: need dig_max > dig_min and ≥ 1 sample",
                    s.dig_min, s.dig_max, s.per_record
                ),
            ));
        }
        signals.push(s);
    }
    let record_bytes: usize = signals.iter().map(|s| 2 * s.per_record).sum();
    let available = (bytes.len() - header_bytes) / record_bytes.max(1);
    let n_records = if n_records_field < 0 {
        available
    } else {
        n_records_field as usize
    };
    if available < n_records {
        return Err(err(
            "data",
            format!(
                "the header announces {n_records} records but the file holds {available} (truncated download?)"
            ),
        ));
    }
    let chans: Vec<&Signal> = signals.iter().filter(|s| !s.annotation).collect();
    if chans.is_empty() {
        return Err(err(
            "signals",
            "only annotation signals, no data channels".into(),
        ));
    }
    let per = chans[0].per_record;
    if let Some(s) = chans.iter().find(|s| s.per_record != per) {
        return Err(err(
            &format!("signal {}", s.label),
            format!(
                "{} samples per record vs {per} for {}: channels with different rates are not supported",
                s.per_record, chans[0].label
            ),
        ));
    }
    let n_samples = n_records * per;
    let mut data = vec![0.0; chans.len() * n_samples];
    let mut off = header_bytes;
    for r in 0..n_records {
        let mut c = 0;
        for s in &signals {
            if s.annotation {
                off += 2 * s.per_record;
                continue;
            }
            let gain = (s.phys_max - s.phys_min) / (s.dig_max - s.dig_min);
            let row = &mut data[c * n_samples + r * per..c * n_samples + (r + 1) * per];
            for (k, v) in row.iter_mut().enumerate() {
                let d = i16::from_le_bytes([bytes[off + 2 * k], bytes[off + 2 * k + 1]]);
                *v = (f64::from(d) - s.dig_min) * gain + s.phys_min;
            }
            off += 2 * s.per_record;
            c += 1;
        }
    }
    Ok(Edf {
        labels: chans
            .iter()
            .map(|s| s.label.trim_end_matches('.').to_string())
            .collect(),
        units: chans.iter().map(|s| s.unit.clone()).collect(),
        rate: per as f64 / record_s,
        n_samples,
        data,
        start: format!("{} {}", text(168, 176), text(176, 184)),
    })
}

/// Write a plain EDF file (for tests and exports): channel-major `data` in physical units,
/// stored with a digital range of ±32767 over each channel's [min, max].
pub fn write_edf(
    path: &Path,
    labels: &[&str],
    rate: f64,
    samples_per_record: usize,
    data: &[f64],
) -> std::io::Result<()> {
    let nch = labels.len();
    let n = data.len() / nch.max(1);
    let n_records = n / samples_per_record;
    let pad = |s: &str, w: usize| format!("{s:<w$}").chars().take(w).collect::<String>();
    let mut h = String::new();
    h += &pad("0", 8);
    h += &pad("X X X X", 80);
    h += &pad("Startdate 01-JAN-2024 X X X", 80);
    h += &pad("01.01.24", 8);
    h += &pad("00.00.00", 8);
    h += &pad(&(256 * (nch + 1)).to_string(), 8);
    h += &pad("", 44);
    h += &pad(&n_records.to_string(), 8);
    h += &pad(&(samples_per_record as f64 / rate).to_string(), 8);
    h += &pad(&nch.to_string(), 4);
    let ranges: Vec<(f64, f64)> = (0..nch)
        .map(|c| {
            let row = &data[c * n..(c + 1) * n];
            let lo = row.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if hi > lo {
                (lo, hi)
            } else {
                (lo - 1.0, lo + 1.0)
            }
        })
        .collect();
    for l in labels {
        h += &pad(l, 16);
    }
    for _ in 0..nch {
        h += &pad("AgAgCl electrode", 80);
    }
    for _ in 0..nch {
        h += &pad("uV", 8);
    }
    let fmt = |v: f64| {
        let s = format!("{v}");
        if s.len() > 8 {
            format!("{v:.2e}")
        } else {
            s
        }
    };
    for r in &ranges {
        h += &pad(&fmt(r.0), 8);
    }
    for r in &ranges {
        h += &pad(&fmt(r.1), 8);
    }
    for _ in 0..nch {
        h += &pad("-32767", 8);
    }
    for _ in 0..nch {
        h += &pad("32767", 8);
    }
    for _ in 0..nch {
        h += &pad("", 80);
    }
    for _ in 0..nch {
        h += &pad(&samples_per_record.to_string(), 8);
    }
    for _ in 0..nch {
        h += &pad("", 32);
    }
    let mut bytes = h.into_bytes();
    for r in 0..n_records {
        for c in 0..nch {
            // Quantise with the range as written (parsed back exactly as the reader will).
            let lo: f64 = fmt(ranges[c].0).parse().unwrap_or(ranges[c].0);
            let hi: f64 = fmt(ranges[c].1).parse().unwrap_or(ranges[c].1);
            for k in 0..samples_per_record {
                let v = data[c * n + r * samples_per_record + k];
                let d = ((v - lo) / (hi - lo) * 65534.0 - 32767.0)
                    .round()
                    .clamp(-32767.0, 32767.0);
                bytes.extend_from_slice(&(d as i16).to_le_bytes());
            }
        }
    }
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let dir = std::env::temp_dir().join(format!("lrsmc-edf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.edf");
        let (nch, n) = (3, 480);
        let data: Vec<f64> = (0..nch * n)
            .map(|i| 100.0 * ((i % n) as f64 * 0.05 + (i / n) as f64).sin())
            .collect();
        write_edf(&p, &["Fc5.", "Fc3.", "Fc1."], 160.0, 160, &data).unwrap();
        let e = read_edf(&p).unwrap();
        assert_eq!(e.labels, vec!["Fc5", "Fc3", "Fc1"]);
        assert_eq!((e.rate, e.n_samples), (160.0, 480));
        let step = 200.0 / 65534.0;
        for (a, b) in e.data.iter().zip(&data) {
            assert!((a - b).abs() <= step, "{a} vs {b}");
        }
        // Truncated: the error names the field and says what happened.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
        let msg = read_edf(&p).unwrap_err().to_string();
        assert!(
            msg.contains("a.edf: data:") && msg.contains("truncated"),
            "{msg}"
        );
        std::fs::write(&p, b"not an edf").unwrap();
        assert!(read_edf(&p).unwrap_err().to_string().contains("header"));
        let mut bad = bytes.clone();
        bad[252..256].copy_from_slice(b"x   ");
        std::fs::write(&p, &bad).unwrap();
        assert!(read_edf(&p).unwrap_err().to_string().contains("n_signals"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
