//! `lowrank-smc bench ingest`: read and bin 10⁷ spikes of 200 units from an NWB file (NLB
//! windows, 20 ms bins) — goal < 1 s and ≥ 5× pynwb + numpy on the same file. The reference is
//! measured in the same run when `LOWRANK_SMC_PYTHON` names a Python with pynwb (see
//! scripts/pynwb-venv.sh): it reads the flat spike-time column and its index with pynwb and
//! bins with `np.searchsorted` (vectorised over windows), best of 3 runs like ours, and its
//! total count must equal ours.

use std::path::Path;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp1};

use crate::data::nwb_write::{ColumnData, NwbWriter};
use crate::stages::bin::{bin_nwb, Align, BinParams};

const REFERENCE: &str = r#"
import sys, time
import numpy as np
from pynwb import NWBHDF5IO
best = float('inf')
for _ in range(3):   # best of 3, as ours
    t0 = time.perf_counter()
    with NWBHDF5IO(sys.argv[1], 'r') as io:
        f = io.read()
        starts = f.trials['move_onset_time'][:] - 0.25
        nb = 35
        edges = starts[:, None] + np.arange(nb + 1)[None, :] * 0.02
        ragged = f.units['spike_times']          # the VectorIndex over the flat column
        st = ragged.target.data[:]
        idx = ragged.data[:]
        out = np.zeros((len(starts), len(idx), nb))
        s = 0
        for u, e in enumerate(idx):
            sp = st[s:e]
            s = e
            pos = np.searchsorted(sp, edges.ravel()).reshape(edges.shape)
            out[:, u, :] = np.diff(pos, axis=1)
    best = min(best, time.perf_counter() - t0)
print(best, out.sum())
"#;

/// Run the ingest benchmark; one line per case.
pub fn bench_ingest() -> Vec<String> {
    let mut lines = Vec::new();
    let dir = std::env::temp_dir().join(format!("lrsmc-bench-ingest-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return vec![format!("ingest: cannot create {}: {e}", dir.display())];
    }
    let file = dir.join("spikes.nwb");
    let (n_units, per_unit, dur) = (200usize, 50_000usize, 1000.0);
    let t = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let spikes: Vec<Vec<f64>> = (0..n_units)
        .map(|_| {
            let mut v = Vec::with_capacity(per_unit);
            let mut x = 0.0;
            let mean_gap = dur / per_unit as f64;
            for _ in 0..per_unit {
                let e: f64 = Exp1.sample(&mut rng);
                x += e * mean_gap;
                v.push(x);
            }
            v
        })
        .collect();
    let n_trials = 1000;
    let start: Vec<f64> = (0..n_trials).map(|k| k as f64).collect();
    let stop: Vec<f64> = start.iter().map(|s| s + 1.0).collect();
    let onset: Vec<f64> = start.iter().map(|s| s + 0.3).collect();
    let written = (|| {
        let mut w = NwbWriter::create(
            &file,
            "bench",
            "ingest benchmark",
            "2024-01-01T00:00:00+00:00",
        )?;
        let ids: Vec<i64> = (0..n_units as i64).collect();
        w.write_units(&ids, &spikes, None, None, &[])?;
        w.write_trials(
            &start,
            &stop,
            &[("move_onset_time", "onset", ColumnData::Float(&onset))],
        )?;
        w.finish()
    })();
    if let Err(e) = written {
        return vec![format!("ingest: writing the benchmark file failed: {e}")];
    }
    let n_spikes = n_units * per_unit;
    lines.push(format!(
        "ingest: wrote {n_spikes} spikes of {n_units} units as NWB ({:.1} MB) in {:.2} s",
        std::fs::metadata(&file)
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(0.0),
        t.elapsed().as_secs_f64()
    ));
    let p = BinParams {
        bin_ms: 20.0,
        align: Some(Align {
            event: "move_onset_time".into(),
            start_ms: -250.0,
            end_ms: 450.0,
        }),
        splits: None,
        split_heldout: true,
        behavior: Vec::new(),
        lfp: None,
        start_s: None,
        end_s: None,
        segment_s: None,
        data_source: Some("synthetic".into()),
    };
    let mut best = f64::INFINITY;
    let mut ours_total = 0.0;
    for _ in 0..3 {
        let t = Instant::now();
        match bin_nwb(&file, &p) {
            Ok(b) => {
                best = best.min(t.elapsed().as_secs_f64());
                ours_total = b.x.x.iter().sum::<f64>();
            }
            Err(e) => return vec![format!("ingest: binning failed: {e}")],
        }
    }
    let reference = reference_seconds(&file);
    let line = match &reference {
        Some((secs, total)) => format!(
            "read + bin 1e7 spikes, 200 units, 1000 NLB windows (-250..450 ms, 20 ms): {best:.3} s = {:.0} M spikes/s (goal < 1 s); pynwb + numpy {secs:.3} s = {:.0} M spikes/s, reference / ours = {:.1} (goal ≥ 5); counts {}",
            n_spikes as f64 / best / 1e6,
            n_spikes as f64 / secs / 1e6,
            secs / best,
            if (total - ours_total).abs() < 0.5 { "agree".to_string() } else { format!("DIFFER: ours {ours_total} vs reference {total}") }
        ),
        None => format!(
            "read + bin 1e7 spikes, 200 units, 1000 NLB windows (-250..450 ms, 20 ms): {best:.3} s = {:.0} M spikes/s (goal < 1 s); reference not measured (set LOWRANK_SMC_PYTHON to a Python with pynwb: scripts/pynwb-venv.sh)",
            n_spikes as f64 / best / 1e6
        ),
    };
    lines.push(line);
    let _ = std::fs::remove_dir_all(&dir);
    lines
}

/// pynwb + numpy on the same file: (seconds, total count), when a Python is configured.
fn reference_seconds(file: &Path) -> Option<(f64, f64)> {
    let py = std::env::var_os("LOWRANK_SMC_PYTHON").filter(|p| !p.is_empty())?;
    let out = std::process::Command::new(py)
        .arg("-c")
        .arg(REFERENCE)
        .arg(file)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let secs = it.next()?.parse().ok()?;
    let total = it.next()?.parse().ok()?;
    Some((secs, total))
}
