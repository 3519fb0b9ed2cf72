//! The `bin` kind: an NWB file (spikes, behaviour, LFP) → a sequences file on one time grid.
//!
//! ```yaml
//! - name: maze.bin
//!   kind: bin
//!   params:
//!     bin_ms: 20
//!     align: {event: move_onset_time, start_ms: -250, end_ms: 450}   # NLB MC_Maze windows
//!     splits: [train, val]              # keep trials whose `split` column is one of these
//!     behavior: [processing/behavior/hand_vel]
//!   inputs: {nwb: "dataset:mc_maze_small"}
//! - name: hc.bin
//!   kind: bin
//!   params:
//!     bin_ms: 20
//!     segment_s: 10                     # continuous recording cut into 10 s sequences
//!     behavior: [processing/behavior/Position/position]
//!     lfp: {band_hz: [6, 10]}           # theta band, zero-phase
//!   inputs: {nwb: "..."}
//! ```
//!
//! Output `sequences.h5` (h5py-readable): `x` (sequences, held-in units, bins) — counts;
//! `x_heldout` (NLB's held-out units, when the units table has `heldout`); `behavior` and
//! `lfp` (sequences, channels, bins) — each series averaged over a bin; `trial_id`, `split`,
//! `condition`, `unit_ids`; attributes `bin_ms`, `align`, `source_file`, `data_source`, and
//! `behavior_channels`. `x` is what `fit` reads.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::binning::{bandpass, bin_series, bin_spike_train, zeroed};
use crate::data::nwb::{Column, NwbFile, Timing};
use crate::data::sequences_io::{write_sequences_with, ExtraDataset};
use crate::model::Sequences;
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};
use crate::plot::{line_plot, FigurePaths, Series};

/// Trial-aligned windows (NLB style).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Align {
    /// Column of the trials table to align on (`move_onset_time`, `start_time`, …).
    pub event: String,
    /// Window start relative to the event (ms).
    pub start_ms: f64,
    /// Window end relative to the event (ms).
    pub end_ms: f64,
}

/// LFP binning.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LfpParams {
    /// Series path; default: the first ElectricalSeries under `processing/*/LFP`.
    #[serde(default)]
    pub path: Option<String>,
    /// Zero-phase band-pass [lo, hi] Hz before binning (theta: [6, 10]); none = raw.
    #[serde(default)]
    pub band_hz: Option<[f64; 2]>,
}

/// Params of a `bin` stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BinParams {
    /// Bin width (ms).
    pub bin_ms: f64,
    /// Trial-aligned windows; without it one continuous grid (see `segment_s`).
    #[serde(default)]
    pub align: Option<Align>,
    /// Keep only trials whose `split` column is one of these (NLB: train, val, test).
    #[serde(default)]
    pub splits: Option<Vec<String>>,
    /// Put NLB's held-out units (`units.heldout`) into `x_heldout` instead of `x`.
    #[serde(default = "yes")]
    pub split_heldout: bool,
    /// TimeSeries paths binned onto the same grid (mean per bin).
    #[serde(default)]
    pub behavior: Vec<String>,
    /// LFP onto the same grid.
    #[serde(default)]
    pub lfp: Option<LfpParams>,
    /// Continuous mode: start of the grid (s); default 0.
    #[serde(default)]
    pub start_s: Option<f64>,
    /// Continuous mode: end of the grid (s); default the units' observed end (or last spike).
    #[serde(default)]
    pub end_s: Option<f64>,
    /// Continuous mode: cut the grid into sequences of this length (s).
    #[serde(default)]
    pub segment_s: Option<f64>,
    /// `data_source` label; default from the file (`surrogate` when its notes say so, else
    /// `real`).
    #[serde(default)]
    pub data_source: Option<String>,
}

fn yes() -> bool {
    true
}

impl BinParams {
    /// Check the numbers; errors name the field.
    pub fn check(&self) -> Result<(), ParamError> {
        if !(self.bin_ms.is_finite() && self.bin_ms > 0.0) {
            return Err(ParamError::new(
                "bin_ms",
                format!("{}: must be > 0", self.bin_ms),
            ));
        }
        if let Some(a) = &self.align {
            let len = a.end_ms - a.start_ms;
            if !(len.is_finite() && len > 0.0) {
                return Err(ParamError::new(
                    "align",
                    format!("end_ms {} must be after start_ms {}", a.end_ms, a.start_ms),
                ));
            }
            if self.bin_ms > len {
                return Err(ParamError::new(
                    "bin_ms",
                    format!("{} ms is longer than the {len} ms window", self.bin_ms),
                ));
            }
        }
        if let Some(s) = self.segment_s {
            if !(s.is_finite() && s * 1000.0 >= self.bin_ms) {
                return Err(ParamError::new(
                    "segment_s",
                    format!("{s}: must hold at least one bin of {} ms", self.bin_ms),
                ));
            }
        }
        if let Some(l) = &self.lfp {
            if let Some([lo, hi]) = l.band_hz {
                if !(lo >= 0.0 && hi > lo) {
                    return Err(ParamError::new(
                        "lfp.band_hz",
                        format!("[{lo}, {hi}]: need 0 ≤ lo < hi"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The binned data and what went into it.
pub struct Binned {
    /// Held-in counts (sequences × units × bins).
    pub x: Sequences<f64>,
    /// Extra datasets (held-out counts, behaviour, LFP, labels).
    pub extra: Vec<(&'static str, ExtraDataset)>,
    /// String attributes.
    pub attrs: Vec<(&'static str, String)>,
    /// Spikes counted.
    pub n_spikes_binned: f64,
}

fn nwb_err(e: impl std::fmt::Display) -> StageError {
    StageError::new(e.to_string())
}

/// Bin an NWB file as `p` says.
pub fn bin_nwb(path: &Path, p: &BinParams) -> Result<Binned, StageError> {
    p.check()
        .map_err(|e| StageError::new(format!("params.{e}")))?;
    let f = NwbFile::open(path).map_err(nwb_err)?;
    let units = f.units().map_err(nwb_err)?;
    if units.is_empty() {
        return Err(StageError::new(format!(
            "{}: units: the table has no rows",
            path.display()
        )));
    }
    let bin = p.bin_ms / 1000.0;
    // The grid: window starts and bins per window.
    let mut trial_ids: Vec<i64> = Vec::new();
    let mut split_labels: Option<Vec<String>> = None;
    let mut condition: Option<Vec<i64>> = None;
    let mut dropped = 0usize;
    let (starts, n_bins) = if let Some(a) = &p.align {
        let t = f.intervals("trials").map_err(nwb_err)?;
        let ev = t.numeric(&a.event).map_err(|e| {
            StageError::new(format!(
                "{}: intervals/trials: {e} (params.align.event)",
                path.display()
            ))
        })?;
        let splits = t.columns.get("split").map(Column::as_text);
        if p.splits.is_some() && splits.is_none() {
            return Err(StageError::new(format!(
                "{}: intervals/trials has no `split` column; remove params.splits",
                path.display()
            )));
        }
        let cond_col = ["trial_type", "condition_id", "condition"]
            .iter()
            .find_map(|c| t.columns.get(*c));
        let n_bins = ((a.end_ms - a.start_ms) / p.bin_ms).round() as usize;
        let mut starts = Vec::new();
        let mut labs = Vec::new();
        let mut conds = Vec::new();
        for (i, &e) in ev.iter().enumerate() {
            if !e.is_finite() {
                dropped += 1;
                continue;
            }
            if let (Some(keep), Some(s)) = (&p.splits, &splits) {
                if !keep.contains(&s[i]) {
                    continue;
                }
            }
            starts.push(e + a.start_ms / 1000.0);
            trial_ids.push(t.ids[i]);
            if let Some(s) = &splits {
                labs.push(s[i].clone());
            }
            if let Some(Column::Int(c)) = cond_col {
                conds.push(c[i]);
            } else if let Some(Column::Float(c)) = cond_col {
                conds.push(c[i] as i64);
            }
        }
        if starts.is_empty() {
            return Err(StageError::new(format!(
                "{}: no trial left after dropping {dropped} trials without `{}` and keeping splits {:?}",
                path.display(),
                a.event,
                p.splits
            )));
        }
        if splits.is_some() {
            split_labels = Some(labs);
        }
        if !conds.is_empty() {
            condition = Some(conds);
        }
        (starts, n_bins)
    } else {
        let t0 = p.start_s.unwrap_or(0.0);
        let t1 = match p.end_s {
            Some(e) => e,
            None => match units.observed_end() {
                Some(e) => e,
                None => {
                    let mut last = t0;
                    let reader = f.spike_reader().map_err(nwb_err)?;
                    let mut spikes = Vec::new();
                    for i in 0..units.len() {
                        reader.read(&units, i, &mut spikes).map_err(nwb_err)?;
                        if let Some(&x) = spikes.last() {
                            last = last.max(x);
                        }
                    }
                    last + bin
                }
            },
        };
        let total = ((t1 - t0) / bin + 1e-9).floor() as usize;
        let per = match p.segment_s {
            Some(s) => ((s / bin) + 1e-9).floor() as usize,
            None => total,
        };
        if per == 0 || total < per {
            return Err(StageError::new(format!(
                "{}: the recording [{t0}, {t1}) s holds {total} bins of {} ms; fewer than one sequence (params.segment_s / start_s / end_s)",
                path.display(),
                p.bin_ms
            )));
        }
        let n_seq = total / per;
        let starts: Vec<f64> = (0..n_seq).map(|k| t0 + (k * per) as f64 * bin).collect();
        trial_ids = (0..n_seq as i64).collect();
        (starts, per)
    };
    let n_seq = starts.len();
    // Units: held-in and held-out.
    let held: Vec<bool> = match (&units.heldout, p.split_heldout) {
        (Some(h), true) => h.clone(),
        _ => vec![false; units.len()],
    };
    let n_in = held.iter().filter(|h| !**h).count();
    let n_out = units.len() - n_in;
    if n_in == 0 {
        return Err(StageError::new(format!(
            "{}: units.heldout marks every unit held out; set params.split_heldout: false",
            path.display()
        )));
    }
    let mut x = zeroed(n_seq * n_in * n_bins);
    let mut xo = zeroed(n_seq * n_out * n_bins);
    // Where each unit's counts go: held-out units to `xo`, the others to `x`, in unit order.
    let slots: Vec<(bool, usize)> = {
        let (mut ki, mut ko) = (0, 0);
        held.iter()
            .map(|&h| {
                let k = if h { &mut ko } else { &mut ki };
                *k += 1;
                (h, *k - 1)
            })
            .collect()
    };
    let (sx, so) = (n_in * n_bins, n_out * n_bins);
    // Blocks of units, each read in one call (at most BLOCK spike times, or one unit) while the
    // previous block is binned straight into x / xo, in parallel over chunks of windows.
    // (Tiny in unit tests, so that their small files span many blocks.)
    const BLOCK: usize = if cfg!(test) { 5 } else { 1 << 19 };
    const WINDOWS_PER_TASK: usize = 16;
    let reader = f.spike_reader().map_err(nwb_err)?;
    let block_end = |u0: usize| {
        let base = units.spike_range(u0).0;
        let mut u1 = u0 + 1;
        while u1 < units.len() && (units.spike_range(u1).1 - base) as usize <= BLOCK {
            u1 += 1;
        }
        u1
    };
    let bin_block =
        |x: &mut [f64], xo: &mut [f64], u0: usize, spikes: &[f64], offsets: &[usize]| {
            let mut xo_chunks: Vec<&mut [f64]> = if so > 0 {
                xo.chunks_mut(so * WINDOWS_PER_TASK).collect()
            } else {
                Vec::new()
            };
            xo_chunks.resize_with(n_seq.div_ceil(WINDOWS_PER_TASK), Default::default);
            x.par_chunks_mut(sx * WINDOWS_PER_TASK)
                .zip(xo_chunks.into_par_iter())
                .enumerate()
                .for_each(|(c, (xc, xoc))| {
                    let w0 = c * WINDOWS_PER_TASK;
                    let starts = &starts[w0..(w0 + WINDOWS_PER_TASK).min(n_seq)];
                    for j in 0..offsets.len() - 1 {
                        let train = &spikes[offsets[j]..offsets[j + 1]];
                        let (h, k) = slots[u0 + j];
                        let (dst, stride) = if h { (&mut *xoc, so) } else { (&mut *xc, sx) };
                        bin_spike_train(train, starts, bin, n_bins, &mut dst[k * n_bins..], stride);
                    }
                });
        };
    let (mut spikes, mut next) = (Vec::new(), Vec::new());
    let mut u0 = 0;
    let mut u1 = block_end(0);
    let mut offsets = reader
        .read_units(&units, 0..u1, &mut spikes)
        .map_err(nwb_err)?;
    loop {
        let u2 = if u1 < units.len() { block_end(u1) } else { u1 };
        let (read, ()) = rayon::join(
            || reader.read_units(&units, u1..u2, &mut next),
            || bin_block(&mut x, &mut xo, u0, &spikes, &offsets),
        );
        if u1 == units.len() {
            break;
        }
        offsets = read.map_err(nwb_err)?;
        std::mem::swap(&mut spikes, &mut next);
        (u0, u1) = (u1, u2);
    }
    // Integer counts: the sum is exact in any order.
    let counted = x.par_iter().sum::<f64>() + xo.par_iter().sum::<f64>();
    let span = (
        starts.iter().cloned().fold(f64::INFINITY, f64::min),
        starts.iter().cloned().fold(f64::NEG_INFINITY, f64::max) + n_bins as f64 * bin,
    );
    let mut extra: Vec<(&'static str, ExtraDataset)> = Vec::new();
    if n_out > 0 {
        extra.push((
            "x_heldout",
            ExtraDataset::Float {
                shape: vec![n_seq, n_out, n_bins],
                data: xo,
            },
        ));
    }
    // Behaviour may have gaps (NaN: tracking lost) that stay NaN in their bins; the LFP, which
    // is filtered, may not.
    let series_on_grid = |path_in: &str,
                          pad: f64,
                          band: Option<[f64; 2]>|
     -> Result<(usize, Vec<f64>), StageError> {
        let mut ts = f
            .time_series(path_in, Some((span.0 - pad, span.1 + pad)))
            .map_err(nwb_err)?;
        if ts.n_samples == 0 {
            return Err(StageError::new(format!(
                "{}: {path_in}: no samples in [{:.3}, {:.3}) s, the binned span",
                path.display(),
                span.0,
                span.1
            )));
        }
        let gaps_allowed = band.is_none();
        if let Some(k) = ts
            .data
            .iter()
            .position(|v| v.is_infinite() || (v.is_nan() && !gaps_allowed))
        {
            return Err(StageError::new(format!(
                "{}: {path_in}/data: sample {} is {} (the LFP must be gap-free; interpolate \
                 gaps before binning)",
                path.display(),
                ts.first_sample + k / ts.n_channels,
                ts.data[k]
            )));
        }
        if let Some([lo, hi]) = band {
            let fs = match ts.timing {
                Timing::Rate { rate, .. } => rate,
                Timing::Timestamps(_) => {
                    return Err(StageError::new(format!(
                        "{}: {path_in}: band-pass needs a regularly sampled series (rate + starting_time)",
                        path.display()
                    )))
                }
            };
            if hi >= fs / 2.0 {
                return Err(StageError::new(format!(
                    "params.lfp.band_hz: {hi} Hz is at or above the Nyquist frequency {} Hz of {path_in}",
                    fs / 2.0
                )));
            }
            bandpass(
                &mut ts.data,
                ts.n_channels,
                fs,
                lo,
                hi,
                (0.25 * (hi - lo)).max(0.5),
            );
        }
        let times: Vec<f64> = (0..ts.n_samples).map(|i| ts.time(i)).collect();
        let mut out = vec![0.0; n_seq * ts.n_channels * n_bins];
        bin_series(
            &times,
            &ts.data,
            ts.n_channels,
            &starts,
            bin,
            n_bins,
            &mut out,
        );
        Ok((ts.n_channels, out))
    };
    let mut attrs: Vec<(&'static str, String)> = Vec::new();
    if !p.behavior.is_empty() {
        let mut chans = Vec::new();
        let mut parts = Vec::new();
        for b in &p.behavior {
            let (c, v) = series_on_grid(b, bin, None)?;
            for k in 0..c {
                chans.push(format!("{}[{k}]", b.trim_matches('/')));
            }
            parts.push((c, v));
        }
        let total: usize = parts.iter().map(|(c, _)| c).sum();
        let mut data = vec![0.0; n_seq * total * n_bins];
        let mut off = 0;
        for (c, v) in &parts {
            for w in 0..n_seq {
                for j in 0..*c {
                    let src = &v[(w * c + j) * n_bins..(w * c + j + 1) * n_bins];
                    data[(w * total + off + j) * n_bins..(w * total + off + j + 1) * n_bins]
                        .copy_from_slice(src);
                }
            }
            off += c;
        }
        let nan_bins = data.iter().filter(|v| v.is_nan()).count();
        extra.push((
            "behavior",
            ExtraDataset::Float {
                shape: vec![n_seq, total, n_bins],
                data,
            },
        ));
        attrs.push((
            "behavior_channels",
            serde_json::to_string(&chans).unwrap_or_default(),
        ));
        // Bins whose behaviour samples were all missing (NaN): skip them when decoding.
        attrs.push(("behavior_nan_bins", nan_bins.to_string()));
    }
    if let Some(l) = &p.lfp {
        let lp = match &l.path {
            Some(x) => x.clone(),
            None => f.find_lfp().map_err(nwb_err)?,
        };
        // Pad the read so the filter's edge effects fall outside the grid.
        let pad = if l.band_hz.is_some() { 2.0 } else { bin };
        let (c, v) = series_on_grid(&lp, pad, l.band_hz)?;
        extra.push((
            "lfp",
            ExtraDataset::Float {
                shape: vec![n_seq, c, n_bins],
                data: v,
            },
        ));
        attrs.push(("lfp_path", lp));
    }
    extra.push(("trial_id", ExtraDataset::Int(trial_ids)));
    if let Some(s) = split_labels {
        extra.push(("split", ExtraDataset::Text(s)));
    }
    if let Some(c) = condition {
        extra.push(("condition", ExtraDataset::Int(c)));
    }
    let ids_in: Vec<i64> = (0..units.len())
        .filter(|&u| !held[u])
        .map(|u| units.ids[u])
        .collect();
    let ids_out: Vec<i64> = (0..units.len())
        .filter(|&u| held[u])
        .map(|u| units.ids[u])
        .collect();
    extra.push(("unit_ids", ExtraDataset::Int(ids_in)));
    if n_out > 0 {
        extra.push(("heldout_unit_ids", ExtraDataset::Int(ids_out)));
    }
    let data_source = match &p.data_source {
        Some(s) => s.clone(),
        None => {
            if f.notes()
                .is_some_and(|n| n.contains("data_source=surrogate"))
            {
                "surrogate".to_string()
            } else {
                "real".to_string()
            }
        }
    };
    attrs.extend([
        ("data_source", data_source),
        (
            "source_file",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        ("bin_ms", p.bin_ms.to_string()),
        ("binning", serde_json::to_string(p).unwrap_or_default()),
        ("dropped_trials", dropped.to_string()),
        ("source_nwb_version", f.nwb_version().unwrap_or_default()),
    ]);
    if let Some(a) = &p.align {
        attrs.push(("align", serde_json::to_string(a).unwrap_or_default()));
    }
    Ok(Binned {
        x: Sequences {
            n_sequences: n_seq,
            dim_x: n_in,
            dim_u: 0,
            n_time: n_bins,
            x,
            u: Vec::new(),
        },
        extra,
        attrs,
        n_spikes_binned: counted,
    })
}

/// Write a [`Binned`] result.
pub fn write_binned(out: &Path, b: &Binned) -> Result<(), StageError> {
    let attrs: Vec<(&str, String)> = b.attrs.iter().map(|(k, v)| (*k, v.clone())).collect();
    let extra: Vec<(&str, ExtraDataset)> = b.extra.iter().map(|(k, v)| (*k, v.clone())).collect();
    write_sequences_with(out, &b.x, &attrs, &extra).map_err(|e| StageError::new(e.to_string()))
}

/// Bins spikes, behaviour and LFP of an NWB file.
#[derive(Debug, Clone, Copy, Default)]
pub struct BinStage;

impl Stage for BinStage {
    fn kind(&self) -> &'static str {
        "bin"
    }
    fn version(&self) -> u32 {
        1
    }
    fn description(&self) -> &'static str {
        "NWB spikes (+ behaviour, LFP) → counts on a time grid (trial-aligned or continuous) → sequences.h5"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let v = canonical_params::<BinParams>(params)?;
        let p: BinParams = serde_json::from_value(v.clone())
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        p.check()?;
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new("sequences", "sequences.h5"),
            OutputSpec::new("figure", "psth.png"),
        ]
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![InputSpec::required("nwb")])
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p: BinParams = ctx.params_as()?;
        let input = ctx.input("nwb")?.to_path_buf();
        let b = bin_nwb(&input, &p)?;
        write_binned(ctx.output("sequences")?, &b)?;
        let fig = psth_figure(&ctx.scratch_dir().join("psth"), &b, p.bin_ms)?;
        ctx.place_output("figure", &fig.png)?;
        ctx.record("n_sequences", b.x.n_sequences);
        ctx.record("n_spikes_binned", b.n_spikes_binned);
        Ok(())
    }
}

/// Population PSTH: mean count per bin over sequences and units, in spikes/s.
pub fn psth_figure(stem: &Path, b: &Binned, bin_ms: f64) -> Result<FigurePaths, StageError> {
    let s = &b.x;
    let mut y = vec![0.0; s.n_time];
    for w in 0..s.n_sequences {
        for u in 0..s.dim_x {
            for (k, yk) in y.iter_mut().enumerate() {
                *yk += s.x[(w * s.dim_x + u) * s.n_time + k];
            }
        }
    }
    let norm = (s.n_sequences * s.dim_x) as f64 * bin_ms / 1000.0;
    let x: Vec<f64> = (0..s.n_time).map(|k| (k as f64 + 0.5) * bin_ms).collect();
    let y: Vec<f64> = y.iter().map(|v| v / norm).collect();
    let source = b
        .attrs
        .iter()
        .find(|(k, _)| *k == "data_source")
        .map(|(_, v)| v.as_str())
        .unwrap_or("unknown");
    line_plot(
        stem,
        &format!("population PSTH (held-in units, mean over sequences; data_source = {source})"),
        "time in sequence (ms)",
        "rate (spikes/s)",
        &[Series {
            reference_for: None,
            label: "mean rate".into(),
            x,
            y,
        }],
        false,
    )
    .map_err(|e| StageError::new(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::nwb_write::{ColumnData, NwbWriter};
    use rand::{Rng, SeedableRng};

    /// Every count of every unit (held-in and held-out) in every window equals binning that
    /// unit's spikes alone, with trials out of time order and units spanning several read
    /// blocks (5 spikes per block here), empty units included.
    #[test]
    fn blocked_parallel_binning_equals_per_unit_binning() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.nwb");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let n_units = 9;
        let spikes: Vec<Vec<f64>> = (0..n_units)
            .map(|u| {
                let n = if u == 4 { 0 } else { rng.gen_range(1..40) };
                let mut v: Vec<f64> = (0..n).map(|_| rng.gen_range(0.0..20.0)).collect();
                v.sort_by(f64::total_cmp);
                v
            })
            .collect();
        let heldout: Vec<bool> = (0..n_units).map(|u| u % 3 == 1).collect();
        let mut onset: Vec<f64> = (0..37).map(|_| rng.gen_range(0.5..19.0)).collect();
        onset.swap(2, 30);
        let start: Vec<f64> = onset.iter().map(|o| o - 0.5).collect();
        let stop: Vec<f64> = onset.iter().map(|o| o + 1.0).collect();
        let mut w =
            NwbWriter::create(&file, "t", "binning test", "2024-01-01T00:00:00+00:00").unwrap();
        let ids: Vec<i64> = (0..n_units as i64).collect();
        w.write_units(
            &ids,
            &spikes,
            None,
            None,
            &[("heldout", "held out", ColumnData::Bool(&heldout))],
        )
        .unwrap();
        w.write_trials(
            &start,
            &stop,
            &[("move_onset_time", "onset", ColumnData::Float(&onset))],
        )
        .unwrap();
        w.finish().unwrap();
        let mut p: BinParams = serde_json::from_value(serde_json::json!({"bin_ms": 20})).unwrap();
        p.align = Some(Align {
            event: "move_onset_time".into(),
            start_ms: -250.0,
            end_ms: 450.0,
        });
        let b = bin_nwb(&file, &p).unwrap();
        let n_bins = 35;
        let xo = b
            .extra
            .iter()
            .find_map(|(k, v)| match (k, v) {
                (&"x_heldout", ExtraDataset::Float { data, .. }) => Some(data.clone()),
                _ => None,
            })
            .expect("held-out counts");
        let n_in = heldout.iter().filter(|h| !**h).count();
        let n_out = n_units - n_in;
        assert_eq!((b.x.n_sequences, b.x.dim_x, b.x.n_time), (37, n_in, n_bins));
        let starts: Vec<f64> = onset.iter().map(|o| o - 0.25).collect();
        let (mut ki, mut ko) = (0, 0);
        let mut total = 0.0;
        for u in 0..n_units {
            let mut want = vec![0.0; starts.len() * n_bins];
            bin_spike_train(&spikes[u], &starts, 0.02, n_bins, &mut want, n_bins);
            total += want.iter().sum::<f64>();
            let (got, n, k) = if heldout[u] {
                ko += 1;
                (&xo, n_out, ko - 1)
            } else {
                ki += 1;
                (&b.x.x, n_in, ki - 1)
            };
            for wdw in 0..starts.len() {
                assert_eq!(
                    &got[(wdw * n + k) * n_bins..(wdw * n + k + 1) * n_bins],
                    &want[wdw * n_bins..(wdw + 1) * n_bins],
                    "unit {u} window {wdw}"
                );
            }
        }
        assert!(total > 0.0);
        assert_eq!(b.n_spikes_binned, total);
    }
}
