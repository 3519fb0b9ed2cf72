//! NWB round trips: our writer → our reader; our writer → pynwb (+ nwbinspector); a file
//! written by pynwb → our reader. The pynwb parts run when `LOWRANK_SMC_PYTHON` names a Python
//! with `pynwb` and `nwbinspector` installed (`.ci/run` creates that venv); without it they
//! print that they were skipped, and the Rust-only round trip still runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use lowrank_smc::data::nwb::{Column, NwbFile, Timing};
use lowrank_smc::data::nwb_write::{ColumnData, NwbWriter, SeriesData, SeriesTiming};

/// The tests of this file run one at a time: a Python child forked while another test holds
/// an HDF5 file open inherits that file's lock (HDF5 opens without O_CLOEXEC) and the next
/// open fails with "unable to lock file". (`main` disables HDF5 file locking for the CLI.)
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lrsmc-nwb-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn python() -> Option<PathBuf> {
    std::env::var_os("LOWRANK_SMC_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The configured Python, or `None` after saying the pynwb test is skipped.
fn python_or_skip() -> Option<PathBuf> {
    let py = python();
    if py.is_none() {
        eprintln!("skipped: set LOWRANK_SMC_PYTHON to a Python with pynwb + nwbinspector");
    }
    py
}

fn run_python(py: &Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("LOWRANK_SMC_PYTHON is set but cannot be run");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// serde_json's float parsing may differ from Python's repr by an ulp: compare to 1e-12.
fn assert_close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "{x} vs {y}");
    }
}

struct Written {
    spikes: Vec<Vec<f64>>,
    start: Vec<f64>,
    stop: Vec<f64>,
    cond: Vec<i64>,
    split: Vec<String>,
    heldout: Vec<bool>,
    vel: Vec<f64>,
    pos_t: Vec<f64>,
    pos: Vec<f64>,
    lfp: Vec<f64>,
}

fn write_file(path: &Path) -> Written {
    let spikes = vec![
        vec![0.011, 0.25, 0.2501, 1.7],
        vec![],
        vec![0.5, 0.9, 1.2, 1.3, 1.99],
    ];
    let start = vec![0.0, 1.0];
    let stop = vec![0.9, 1.95];
    let cond = vec![3, 7];
    let split = vec!["train".to_string(), "val".to_string()];
    let heldout = vec![false, true, false];
    let vel: Vec<f64> = (0..400)
        .map(|i| ((i as f64) * 0.01).sin() * 1000.0)
        .collect();
    let pos_t: Vec<f64> = (0..50).map(|i| 0.013 + i as f64 * 0.04).collect();
    let pos: Vec<f64> = (0..50).map(|i| i as f64 * 2.0).collect();
    let lfp: Vec<f64> = (0..2 * 500).map(|i| (i % 17) as f64 - 8.0).collect();
    let mut w =
        NwbWriter::create(path, "test-file", "round trip", "2024-01-02T03:04:05+00:00").unwrap();
    w.subject("s1", "Mus musculus", "F", "P90D").unwrap();
    w.write_units(
        &[10, 11, 12],
        &spikes,
        Some(&[
            vec![(0.0, 2.0)],
            vec![(0.0, 2.0)],
            vec![(0.0, 1.0), (1.1, 2.0)],
        ]),
        Some(1.0 / 30000.0),
        &[("heldout", "held-out neurons", ColumnData::Bool(&heldout))],
    )
    .unwrap();
    w.write_trials(
        &start,
        &stop,
        &[
            (
                "move_onset_time",
                "movement onset",
                ColumnData::Float(&[0.4, 1.5]),
            ),
            ("trial_type", "condition id", ColumnData::Int(&cond)),
            ("split", "NLB split", ColumnData::Text(&split)),
        ],
    )
    .unwrap();
    let pm = w.processing_module("behavior", "behaviour").unwrap();
    w.write_series(
        &pm,
        "TimeSeries",
        &SeriesData {
            name: "hand_vel",
            description: "hand velocity",
            unit: "m/s",
            data: &vel,
            n_channels: 2,
            timing: SeriesTiming::Rate {
                start: 0.0,
                rate: 100.0,
            },
            conversion: 0.001,
            offset: 0.0,
        },
    )
    .unwrap();
    let posc = w.container(&pm, "Position", "Position").unwrap();
    w.write_series(
        &posc,
        "SpatialSeries",
        &SeriesData {
            name: "position",
            description: "position on the track",
            unit: "meters",
            data: &pos,
            n_channels: 1,
            timing: SeriesTiming::Timestamps(&pos_t),
            conversion: 0.01,
            offset: 0.5,
        },
    )
    .unwrap();
    w.write_lfp(
        &SeriesData {
            name: "lfp",
            description: "local field potential",
            unit: "volts",
            data: &lfp,
            n_channels: 2,
            timing: SeriesTiming::Rate {
                start: 0.0,
                rate: 250.0,
            },
            conversion: 1e-6,
            offset: 0.0,
        },
        "CA1",
    )
    .unwrap();
    w.finish().unwrap();
    Written {
        spikes,
        start,
        stop,
        cond,
        split,
        heldout,
        vel,
        pos_t,
        pos,
        lfp,
    }
}

#[test]
fn our_writer_our_reader() {
    let _serial = serial();
    let d = tmpdir("rr");
    let p = d.join("f.nwb");
    let w = write_file(&p);
    assert!(!d.join("f.nwb.tmp").exists());
    let f = NwbFile::open(&p).unwrap();
    let u = f.units().unwrap();
    assert_eq!(u.ids, vec![10, 11, 12]);
    assert_eq!(u.heldout.as_deref(), Some(&w.heldout[..]));
    for i in 0..3 {
        assert_eq!(f.spike_times(&u, i).unwrap(), w.spikes[i]);
    }
    assert_eq!(
        u.obs_intervals.as_ref().unwrap()[2],
        vec![(0.0, 1.0), (1.1, 2.0)]
    );
    assert_eq!(u.observed_end(), Some(2.0));
    let t = f.intervals("trials").unwrap();
    assert_eq!(t.numeric("start_time").unwrap(), w.start);
    assert_eq!(t.numeric("stop_time").unwrap(), w.stop);
    assert_eq!(t.columns["trial_type"], Column::Int(w.cond.clone()));
    assert_eq!(t.columns["split"], Column::Text(w.split.clone()));
    assert!(t.numeric("nope").unwrap_err().contains("move_onset_time"));
    let hv = f.time_series("processing/behavior/hand_vel", None).unwrap();
    assert_eq!((hv.n_samples, hv.n_channels), (200, 2));
    let conv = 0.001f32 as f64;
    for (a, b) in hv.data.iter().zip(&w.vel) {
        assert!((a - b * conv).abs() < 1e-12);
    }
    // A window reads only its samples: [0.5, 0.6) at 100 Hz = samples 50..60.
    let win = f
        .time_series("processing/behavior/hand_vel", Some((0.5, 0.6)))
        .unwrap();
    assert_eq!((win.first_sample, win.n_samples), (50, 10));
    assert!((win.time(0) - 0.5).abs() < 1e-12);
    assert_eq!(win.data[..], hv.data[100..120]);
    let pos = f
        .time_series("processing/behavior/Position/position", Some((0.1, 0.2)))
        .unwrap();
    assert_eq!(pos.neurodata_type, "SpatialSeries");
    let Timing::Timestamps(ts) = &pos.timing else {
        panic!("timestamps expected")
    };
    assert_eq!(ts[..], w.pos_t[3..5]);
    let (c, o) = (0.01f32 as f64, 0.5f32 as f64);
    assert!((pos.data[0] - (w.pos[3] * c + o)).abs() < 1e-12);
    let lfp_path = f.find_lfp().unwrap();
    assert_eq!(lfp_path, "processing/ecephys/LFP/lfp");
    let lfp = f.time_series(&lfp_path, None).unwrap();
    assert_eq!(lfp.n_channels, 2);
    assert!((lfp.data[3] - w.lfp[3] * (1e-6f32 as f64)).abs() < 1e-15);
    assert_eq!(f.list_series().len(), 3);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bad_files_are_named_errors() {
    let _serial = serial();
    let d = tmpdir("bad");
    let p = d.join("x.nwb");
    std::fs::write(&p, b"this is not hdf5").unwrap();
    let e = NwbFile::open(&p).err().unwrap().to_string();
    assert!(e.contains("x.nwb") && e.contains("not an HDF5 file"), "{e}");
    let e = NwbFile::open(&d.join("missing.nwb"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no such file"), "{e}");
    // HDF5 but not NWB.
    let h = d.join("plain.h5");
    hdf5::File::create(&h).unwrap();
    let e = NwbFile::open(&h).err().unwrap().to_string();
    assert!(e.contains("not NWB"), "{e}");
    // NWB without units.
    let n = d.join("nounits.nwb");
    NwbWriter::create(&n, "x", "no units", "2024-01-01T00:00:00+00:00")
        .unwrap()
        .finish()
        .unwrap();
    let f = NwbFile::open(&n).unwrap();
    let e = f.units().unwrap_err().to_string();
    assert!(
        e.contains("nounits.nwb: units: ") && e.contains("no `units` table"),
        "{e}"
    );
    assert!(f
        .intervals("trials")
        .unwrap_err()
        .to_string()
        .contains("none"));
    // Ragged index out of range, unsorted and NaN spikes.
    let cases: [(&str, Vec<Vec<f64>>, &str); 2] = [
        ("unsorted", vec![vec![0.3, 0.1]], "not sorted"),
        ("nan", vec![vec![0.3, f64::NAN]], "NaN"),
    ];
    for (tag, spikes, want) in cases {
        let q = d.join(format!("{tag}.nwb"));
        let mut w = NwbWriter::create(&q, tag, tag, "2024-01-01T00:00:00+00:00").unwrap();
        w.write_units(&[0], &spikes, None, None, &[]).unwrap();
        w.finish().unwrap();
        let f = NwbFile::open(&q).unwrap();
        let u = f.units().unwrap();
        let e = f.spike_times(&u, 0).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{tag}.nwb"))
                && e.contains("units/spike_times")
                && e.contains(want),
            "{e}"
        );
    }
    let q = d.join("ragged.nwb");
    let mut w = NwbWriter::create(&q, "r", "r", "2024-01-01T00:00:00+00:00").unwrap();
    w.write_units(&[0, 1], &[vec![0.1], vec![0.2, 0.3]], None, None, &[])
        .unwrap();
    w.finish().unwrap();
    {
        let h = hdf5::File::open_rw(&q).unwrap();
        let ds = h.dataset("units/spike_times_index").unwrap();
        ds.write_raw(&[1u64, 9]).unwrap();
    }
    let e = NwbFile::open(&q).unwrap().units().unwrap_err().to_string();
    assert!(
        e.contains("units/spike_times_index") && e.contains("out of range"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).ok();
}

const PYNWB_READ: &str = r#"
import sys, json
from pynwb import NWBHDF5IO
with NWBHDF5IO(sys.argv[1], 'r') as io:
    f = io.read()
    u = f.units
    out = {
        'ids': [int(i) for i in u.id[:]],
        'spikes': [list(map(float, u['spike_times'][i])) for i in range(len(u))],
        'heldout': [bool(x) for x in u['heldout'][:]],
        'obs': [[list(map(float, r)) for r in u['obs_intervals'][i]] for i in range(len(u))],
        'start': list(map(float, f.trials['start_time'][:])),
        'cond': [int(x) for x in f.trials['trial_type'][:]],
        'split': [str(x) for x in f.trials['split'][:]],
        'vel': [float(x) for x in (f.processing['behavior']['hand_vel'].data[:].ravel() * f.processing['behavior']['hand_vel'].conversion)],
        'rate': float(f.processing['behavior']['hand_vel'].rate),
        'pos_t': list(map(float, f.processing['behavior']['Position']['position'].timestamps[:])),
        'lfp_n': int(f.processing['ecephys']['LFP']['lfp'].data.shape[0]),
        'lfp_loc': str(f.processing['ecephys']['LFP']['lfp'].electrodes.table['location'][0]),
    }
print(json.dumps(out))
"#;

#[test]
fn pynwb_reads_our_file_and_nwbinspector_passes() {
    let _serial = serial();
    let Some(py) = python_or_skip() else {
        return;
    };
    let d = tmpdir("py");
    let p = d.join("ours.nwb");
    let w = write_file(&p);
    let out = run_python(&py, PYNWB_READ, &[p.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ids"], serde_json::json!([10, 11, 12]));
    for i in 0..3 {
        let s: Vec<f64> = serde_json::from_value(v["spikes"][i].clone()).unwrap();
        assert_close(&s, &w.spikes[i]);
    }
    assert_eq!(v["heldout"], serde_json::json!(w.heldout));
    assert_eq!(v["obs"][2], serde_json::json!([[0.0, 1.0], [1.1, 2.0]]));
    assert_eq!(v["cond"], serde_json::json!(w.cond));
    assert_eq!(v["split"], serde_json::json!(w.split));
    assert_eq!(v["rate"], serde_json::json!(100.0));
    let vel: Vec<f64> = serde_json::from_value(v["vel"].clone()).unwrap();
    assert_eq!(vel.len(), w.vel.len());
    let pos_t: Vec<f64> = serde_json::from_value(v["pos_t"].clone()).unwrap();
    assert_close(&pos_t, &w.pos_t);
    assert_close(
        &vel,
        &w.vel
            .iter()
            .map(|x| x * (0.001f32 as f64))
            .collect::<Vec<_>>(),
    );
    assert_eq!(v["lfp_n"], serde_json::json!(500));
    assert_eq!(v["lfp_loc"], serde_json::json!("CA1"));
    let _ = (&w.start, &w.stop, &w.pos, &w.lfp);
    // nwbinspector: no CRITICAL findings.
    let insp = Command::new(&py)
        .args([
            "-m",
            "nwbinspector",
            p.to_str().unwrap(),
            "--threshold",
            "CRITICAL",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&insp.stdout).to_string() + &String::from_utf8_lossy(&insp.stderr);
    assert!(
        !text.contains("CRITICAL"),
        "nwbinspector reports critical issues:\n{text}"
    );
    std::fs::remove_dir_all(&d).ok();
}

/// nwbinspector (installed beside the Python) reports no CRITICAL finding for `file`.
fn assert_no_critical(py: &Path, file: &Path) {
    let exe = py.with_file_name("nwbinspector");
    let insp = Command::new(&exe)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (install nwbinspector in that venv)", exe.display()));
    let text =
        String::from_utf8_lossy(&insp.stdout).to_string() + &String::from_utf8_lossy(&insp.stderr);
    // The report lists findings under headers such as "0  CRITICAL\n====".
    assert!(
        text.contains("Found") || text.contains("No issues") || text.contains("BEST_PRACTICE"),
        "nwbinspector did not produce a report:\n{text}"
    );
    assert!(
        !text.contains("CRITICAL\n="),
        "nwbinspector reports critical issues for {}:\n{text}",
        file.display()
    );
}

const PYNWB_WRITE: &str = r#"
import sys
from datetime import datetime, timezone
import numpy as np
from pynwb import NWBFile, NWBHDF5IO, TimeSeries
f = NWBFile(session_description='fixture', identifier='pynwb-fixture',
            session_start_time=datetime(2024, 5, 6, tzinfo=timezone.utc))
f.add_unit_column('heldout', 'held out')
f.add_unit(spike_times=[0.1, 0.2, 0.35], obs_intervals=[[0.0, 1.0]], heldout=False)
f.add_unit(spike_times=[0.05], obs_intervals=[[0.0, 0.5], [0.6, 1.0]], heldout=True)
f.add_unit(spike_times=[], obs_intervals=[[0.0, 1.0]], heldout=False)
f.add_trial_column('move_onset_time', 'onset')
f.add_trial_column('split', 'split')
f.add_trial(start_time=0.0, stop_time=0.5, move_onset_time=0.2, split='train')
f.add_trial(start_time=0.5, stop_time=1.0, move_onset_time=0.7, split='test')
beh = f.create_processing_module('behavior', 'behaviour')
beh.add(TimeSeries(name='rated', data=np.arange(20, dtype='int16').reshape(10, 2), unit='mm',
                   rate=50.0, starting_time=0.25, conversion=0.001, offset=0.5))
f.add_acquisition(TimeSeries(name='stamped', data=np.array([1.0, 2.0, 4.0]), unit='V',
                             timestamps=np.array([0.0, 0.1, 0.3])))
with NWBHDF5IO(sys.argv[1], 'w') as io:
    io.write(f)
"#;

#[test]
fn a_pynwb_file_reads_the_same() {
    let _serial = serial();
    let Some(py) = python_or_skip() else {
        return;
    };
    let d = tmpdir("pyw");
    let p = d.join("theirs.nwb");
    run_python(&py, PYNWB_WRITE, &[p.to_str().unwrap()]);
    let f = NwbFile::open(&p).unwrap();
    let u = f.units().unwrap();
    assert_eq!(u.ids, vec![0, 1, 2]);
    assert_eq!(f.spike_times(&u, 0).unwrap(), vec![0.1, 0.2, 0.35]);
    assert_eq!(f.spike_times(&u, 1).unwrap(), vec![0.05]);
    assert!(f.spike_times(&u, 2).unwrap().is_empty());
    assert_eq!(u.heldout, Some(vec![false, true, false]));
    assert_eq!(
        u.obs_intervals.as_ref().unwrap()[1],
        vec![(0.0, 0.5), (0.6, 1.0)]
    );
    let t = f.intervals("trials").unwrap();
    assert_eq!(t.numeric("move_onset_time").unwrap(), vec![0.2, 0.7]);
    assert_eq!(
        t.columns["split"],
        Column::Text(vec!["train".into(), "test".into()])
    );
    let r = f.time_series("processing/behavior/rated", None).unwrap();
    assert_eq!((r.n_samples, r.n_channels), (10, 2));
    assert_eq!(
        r.timing,
        Timing::Rate {
            start: 0.25,
            rate: 50.0
        }
    );
    assert!((r.data[3] - (3.0 * 0.001 + 0.5)).abs() < 1e-9);
    let s = f
        .time_series("acquisition/stamped", Some((0.05, 1.0)))
        .unwrap();
    assert_eq!(s.data, vec![2.0, 4.0]);
    assert_eq!(s.timing, Timing::Timestamps(vec![0.1, 0.3]));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn surrogates_bin_and_pass_pynwb() {
    let _serial = serial();
    use lowrank_smc::data::surrogate::{Hippocampus, Maze};
    use lowrank_smc::stages::bin::{bin_nwb, Align, BinParams, LfpParams};
    let d = tmpdir("sur");
    let maze = d.join("maze.nwb");
    let m = Maze {
        seed: 3,
        n_trials: 30,
        n_heldin: 20,
        n_heldout: 6,
        n_conditions: 27,
    };
    let sm = m.write(&maze).unwrap();
    assert_eq!((sm.n_units, sm.n_trials), (26, 30));
    let hc = d.join("hc.nwb");
    let h: Hippocampus = serde_json::from_value(
        serde_json::json!({"seed": 2, "duration_s": 30, "n_place_cells": 10}),
    )
    .unwrap();
    let sh = h.write(&hc).unwrap();
    assert_eq!(sh.n_units, 16);
    let mut p: BinParams = serde_json::from_value(serde_json::json!({"bin_ms": 20})).unwrap();
    p.align = Some(Align {
        event: "move_onset_time".into(),
        start_ms: -250.0,
        end_ms: 450.0,
    });
    p.behavior = vec!["processing/behavior/hand_vel".into()];
    let b = bin_nwb(&maze, &p).unwrap();
    assert_eq!((b.x.n_sequences, b.x.dim_x, b.x.n_time), (30, 20, 35));
    assert!(b
        .attrs
        .iter()
        .any(|(k, v)| *k == "data_source" && v == "surrogate"));
    // Binned counts equal a direct count of each unit's spikes in its windows.
    let f = NwbFile::open(&maze).unwrap();
    let u = f.units().unwrap();
    let t = f.intervals("trials").unwrap();
    let onset = t.numeric("move_onset_time").unwrap();
    let held = u.heldout.clone().unwrap();
    let first_in = held.iter().position(|h| !h).unwrap();
    let s = f.spike_times(&u, first_in).unwrap();
    let direct = s
        .iter()
        .filter(|&&x| x >= onset[4] - 0.25 && x < onset[4] + 0.45)
        .count() as f64;
    let binned: f64 = b.x.x[(4 * 20) * 35..(4 * 20 + 1) * 35].iter().sum();
    assert!((direct - binned).abs() <= 1.0, "{direct} vs {binned}");
    // The hand moves after onset (bins 13+), not before.
    let beh = b
        .extra
        .iter()
        .find(|(k, _)| *k == "behavior")
        .map(|(_, v)| v.clone())
        .unwrap();
    let lowrank_smc::data::sequences_io::ExtraDataset::Float { shape, data } = beh else {
        panic!("float behaviour expected")
    };
    assert_eq!(shape, vec![30, 2, 35]);
    let speed = |k: usize| data[k].abs() + data[35 + k].abs();
    assert!(
        speed(20) > 10.0 * speed(5).max(1e-6),
        "{} vs {}",
        speed(20),
        speed(5)
    );
    let mut q: BinParams =
        serde_json::from_value(serde_json::json!({"bin_ms": 20, "segment_s": 5})).unwrap();
    q.lfp = Some(LfpParams {
        path: None,
        band_hz: Some([6.0, 10.0]),
    });
    q.behavior = vec!["processing/behavior/Position/position".into()];
    let b = bin_nwb(&hc, &q).unwrap();
    assert_eq!((b.x.n_sequences, b.x.n_time), (6, 250));
    assert!(b.extra.iter().any(|(k, _)| *k == "lfp"));
    // Bad params name the field.
    let mut bad = p.clone();
    bad.bin_ms = 1000.0;
    let e = bin_nwb(&maze, &bad).err().unwrap().to_string();
    assert!(e.contains("bin_ms") && e.contains("longer than"), "{e}");
    bad.bin_ms = -1.0;
    assert!(bin_nwb(&maze, &bad)
        .err()
        .unwrap()
        .to_string()
        .contains("bin_ms"));
    let mut bad = p.clone();
    bad.align.as_mut().unwrap().event = "nope".into();
    let e = bin_nwb(&maze, &bad).err().unwrap().to_string();
    assert!(
        e.contains("no column `nope`") && e.contains("params.align.event"),
        "{e}"
    );
    if let Some(py) = python() {
        for file in [&maze, &hc] {
            assert_no_critical(&py, file);
            run_python(
                &py,
                "import sys\nfrom pynwb import NWBHDF5IO\nwith NWBHDF5IO(sys.argv[1], 'r') as io:\n    f = io.read(); assert len(f.units) > 0; print(f.subject.species)",
                &[file.to_str().unwrap()],
            );
        }
    } else {
        eprintln!("pynwb part skipped: set LOWRANK_SMC_PYTHON");
    }
    std::fs::remove_dir_all(&d).ok();
}

/// Corrupted files (truncated at many points, or with runs of bytes overwritten) give an
/// error or a result, never a panic.
#[test]
fn corrupted_files_never_panic() {
    let _serial = serial();
    let d = tmpdir("corrupt");
    let good = d.join("good.nwb");
    write_file(&good);
    let bytes = std::fs::read(&good).unwrap();
    let exercise = |p: &Path| {
        let Ok(f) = NwbFile::open(p) else { return };
        if let Ok(u) = f.units() {
            for i in 0..u.len() {
                let _ = f.spike_times(&u, i);
            }
        }
        let _ = f.intervals("trials");
        for s in f.list_series() {
            let _ = f.time_series(&s.path, Some((0.1, 0.5)));
        }
        let _ = f.find_lfp();
    };
    let p = d.join("bad.nwb");
    for k in 1..20 {
        std::fs::write(&p, &bytes[..bytes.len() * k / 20]).unwrap();
        exercise(&p);
    }
    // Overwrite 64-byte runs past the superblock with a pattern (seeded positions).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..30 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = 512 + (state as usize) % (bytes.len() - 600);
        let mut b = bytes.clone();
        for (j, x) in b[at..at + 64].iter_mut().enumerate() {
            *x = (j as u8).wrapping_mul(37) ^ 0xA5;
        }
        std::fs::write(&p, &b).unwrap();
        exercise(&p);
    }
    std::fs::remove_dir_all(&d).ok();
}

/// The hippocampus surrogate has what it claims: place fields and theta phase precession.
/// The theta phase comes from the file's own LFP (band-passed, phase = atan2(−x′/ω, x)); for
/// each place cell, spikes in the entry half of its field (along the running direction) fire at
/// later theta phases than spikes in the exit half (sin φ < 0 at entry, > 0 at exit).
#[test]
fn hippocampus_surrogate_precesses() {
    use lowrank_smc::data::binning::bandpass;
    use lowrank_smc::data::surrogate::Hippocampus;
    let _serial = serial();
    let d = tmpdir("prec");
    let p = d.join("hc.nwb");
    let h: Hippocampus = serde_json::from_value(
        serde_json::json!({"seed": 5, "duration_s": 120, "n_place_cells": 12, "n_interneurons": 0}),
    )
    .unwrap();
    h.write(&p).unwrap();
    let f = NwbFile::open(&p).unwrap();
    let mut lfp = f.time_series(&f.find_lfp().unwrap(), None).unwrap();
    let fs = 1250.0;
    let nch = lfp.n_channels;
    bandpass(&mut lfp.data, nch, fs, 6.0, 10.0, 1.0);
    let x: Vec<f64> = (0..lfp.n_samples).map(|i| lfp.data[i * nch]).collect();
    let w = 2.0 * std::f64::consts::PI * 8.0;
    let phase_at = |t: f64| {
        let i = ((t * fs) as usize).clamp(1, x.len() - 2);
        let dx = (x[i + 1] - x[i - 1]) * fs / 2.0;
        (-dx / w).atan2(x[i])
    };
    let pos = f
        .time_series("processing/behavior/Position/position", None)
        .unwrap();
    let pt: Vec<f64> = (0..pos.n_samples).map(|i| pos.time(i)).collect();
    let pos_at = |t: f64| {
        let j = pt.partition_point(|&s| s <= t).clamp(2, pt.len() - 2);
        (pos.data[j - 1], pos.data[j + 1] - pos.data[j - 2])
    };
    let u = f.units().unwrap();
    let mut diffs = Vec::new();
    for i in 0..u.len() {
        let spikes = f.spike_times(&u, i).unwrap();
        // Spikes while running, with position and direction.
        let run: Vec<(f64, f64, f64)> = spikes
            .iter()
            .filter_map(|&t| {
                let (x, dx) = pos_at(t);
                (dx.abs() > 0.01).then(|| (x, dx.signum(), phase_at(t)))
            })
            .collect();
        for dir in [-1.0, 1.0] {
            let s: Vec<&(f64, f64, f64)> = run.iter().filter(|r| r.1 == dir).collect();
            if s.len() < 40 {
                continue;
            }
            let centre = s.iter().map(|r| r.0).sum::<f64>() / s.len() as f64;
            let (mut entry, mut exit) = (Vec::new(), Vec::new());
            for r in &s {
                if (r.0 - centre) * dir < 0.0 {
                    entry.push(r.2.sin());
                } else {
                    exit.push(r.2.sin());
                }
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            diffs.push(mean(&exit) - mean(&entry));
        }
    }
    eprintln!("exit − entry mean sin(phase) per field: {diffs:?}");
    assert!(diffs.len() >= 5, "too few active fields: {diffs:?}");
    let positive = diffs.iter().filter(|&&d| d > 0.0).count();
    let avg = diffs.iter().sum::<f64>() / diffs.len() as f64;
    assert!(
        positive * 10 >= diffs.len() * 8 && avg > 0.3,
        "exit − entry mean sin(theta phase) per field: {diffs:?}"
    );
    std::fs::remove_dir_all(&d).ok();
}

/// The CLI end to end: `exec surrogate` → `bin` → `export-nwb`, read back by our reader (and
/// by pynwb when configured); bad input is a named error with exit code ≠ 0 and no output.
#[test]
fn cli_surrogate_bin_export() {
    let _serial = serial();
    let d = tmpdir("cli");
    let exe = env!("CARGO_BIN_EXE_lowrank-smc");
    let run = |args: &[&str]| {
        let o = Command::new(exe)
            .args(args)
            .current_dir(&d)
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (code, text) = run(&[
        "exec",
        "surrogate",
        "--set",
        "recording=maze",
        "--set",
        "seed=2",
        "--set",
        "n_trials=12",
        "--out-dir",
        "m",
    ]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = run(&[
        "bin",
        "m/recording.nwb",
        "--bin-ms",
        "20",
        "--out",
        "b.h5",
        "--align",
        "move_onset_time:-250:450",
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("12 sequences × 137 units × 35 bins"),
        "{text}"
    );
    assert!(d.join("b_psth.png").is_file());
    let (code, text) = run(&["export-nwb", "b.h5", "--out", "e.nwb", "--rate-hz", "50"]);
    assert_eq!(code, 0, "{text}");
    let f = NwbFile::open(&d.join("e.nwb")).unwrap();
    assert!(f.notes().unwrap().contains("data_source=surrogate"));
    let s = f
        .time_series("processing/lowrank_smc/sequence_3", None)
        .unwrap();
    assert_eq!((s.n_samples, s.n_channels), (35, 137));
    let back = lowrank_smc::data::sequences_io::read_sequences(&d.join("b.h5")).unwrap();
    let x = back.x_of(3);
    assert_eq!(s.data[5 * 137 + 7], x[7 * 35 + 5]);
    if let Some(py) = python() {
        run_python(
            &py,
            "import sys\nfrom pynwb import NWBHDF5IO\nwith NWBHDF5IO(sys.argv[1], 'r') as io:\n    f = io.read(); assert f.processing['lowrank_smc']['sequence_0'].data.shape == (35, 137)",
            &[d.join("e.nwb").to_str().unwrap()],
        );
    }
    // Bad input: a bin wider than the window, a missing event column, a non-NWB file.
    let (code, text) = run(&[
        "bin",
        "m/recording.nwb",
        "--bin-ms",
        "900",
        "--out",
        "x.h5",
        "--align",
        "move_onset_time:-250:450",
    ]);
    assert_ne!(code, 0);
    assert!(
        text.contains("bin_ms") && !d.join("x.h5").exists(),
        "{text}"
    );
    let (code, text) = run(&[
        "bin",
        "m/recording.nwb",
        "--bin-ms",
        "20",
        "--out",
        "x.h5",
        "--align",
        "nope:-250:450",
    ]);
    assert_ne!(code, 0);
    assert!(text.contains("no column `nope`"), "{text}");
    let (code, text) = run(&["bin", "b.h5", "--bin-ms", "20", "--out", "x.h5"]);
    assert_ne!(code, 0);
    assert!(text.contains("b.h5") && text.contains("not NWB"), "{text}");
    assert!(!d.join("x.h5").exists() && !d.join("x.h5.tmp").exists());
    std::fs::remove_dir_all(&d).ok();
}
