//! CRCNS hippocampus sessions (Neuroscope / KlustaKwik files) → NWB through the CLI: a synthetic
//! session written in the real layout converts into an NWB file whose units, LFP and position
//! equal what was written, `bin` reads it, and broken sessions are errors naming the file.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use lowrank_smc::data::nwb::NwbFile;

const FS: f64 = 20_000.0;

fn lowrank(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lowrank-smc"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Shank k: spikes of clusters 0, 1 (dropped) and 2, 3 (kept); 3-channel LFP; 2-column position.
fn write_session(dir: &Path) -> Vec<(i64, Vec<f64>)> {
    let base = dir.join("s1");
    std::fs::create_dir_all(&base).unwrap();
    let b = |suffix: &str| base.join(format!("s1{suffix}"));
    std::fs::write(
        b(".xml"),
        "<?xml version='1.0'?><parameters><acquisitionSystem><nBits>16</nBits>\
         <nChannels>3</nChannels><samplingRate>20000</samplingRate></acquisitionSystem>\
         <fieldPotentials><lfpSamplingRate>1250</lfpSamplingRate></fieldPotentials></parameters>",
    )
    .unwrap();
    let mut expected = Vec::new();
    for shank in [1usize, 2] {
        let mut res = String::new();
        let mut clu = String::from("4\n");
        let mut per: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
        for i in 0..400u64 {
            let sample = 37 * i + 11 * shank as u64 + (i * i) % 13;
            let cluster = ((i * 7 + shank as u64) % 4) as i64;
            res.push_str(&format!("{sample}\n"));
            clu.push_str(&format!("{cluster}\n"));
            if cluster >= 2 {
                per.entry(cluster).or_default().push(sample as f64 / FS);
            }
        }
        std::fs::write(b(&format!(".res.{shank}")), res).unwrap();
        std::fs::write(b(&format!(".clu.{shank}")), clu).unwrap();
        for (c, t) in per {
            expected.push((1000 * shank as i64 + c, t));
        }
    }
    let mut eeg = std::fs::File::create(b(".eeg")).unwrap();
    for f in 0..1250i32 {
        for c in 0..3i32 {
            let v = ((f * 31 + c * 1000) % 4001 - 2000) as i16;
            eeg.write_all(&v.to_le_bytes()).unwrap();
        }
    }
    let mut whl = String::new();
    for f in 0..40 {
        if f == 7 {
            whl.push_str("-1 -1\n");
        } else {
            whl.push_str(&format!("{} {}\n", 100 + f, 50 - f));
        }
    }
    std::fs::write(b(".whl"), whl).unwrap();
    expected
}

#[test]
fn a_session_converts_and_bins() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let expected = write_session(d);
    let (code, text) = lowrank(
        d,
        &[
            "convert-crcns",
            "s1/s1",
            "--out",
            "s1.nwb",
            "--lfp-channels",
            "0,2",
            "--lfp-conversion",
            "1e-6",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("shanks [1, 2]"), "{text}");
    let nwb = NwbFile::open(&d.join("s1.nwb")).unwrap();
    let units = nwb.units().unwrap();
    let got_ids: Vec<i64> = units.ids.clone();
    let want_ids: Vec<i64> = expected.iter().map(|(id, _)| *id).collect();
    assert_eq!(got_ids, want_ids);
    for (i, (_, times)) in expected.iter().enumerate() {
        assert_eq!(&nwb.spike_times(&units, i).unwrap(), times, "unit {i}");
    }
    let lfp = nwb.time_series(&nwb.find_lfp().unwrap(), None).unwrap();
    assert_eq!((lfp.n_samples, lfp.n_channels), (1250, 2));
    for f in [0usize, 17, 1249] {
        for (k, c) in [0i32, 2].iter().enumerate() {
            let raw = ((f as i32 * 31 + c * 1000) % 4001 - 2000) as f64;
            assert!((lfp.data[f * 2 + k] - raw * 1e-6).abs() < 1e-12 * (1.0 + raw.abs()));
        }
    }
    let pos = nwb
        .time_series("processing/behavior/Position/position", None)
        .unwrap();
    assert_eq!((pos.n_samples, pos.n_channels), (40, 2));
    assert!(pos.data[14].is_nan() && pos.data[15].is_nan());
    assert_eq!(pos.data[16], 108.0);
    assert!((pos.time(1) - 1.0 / 39.0625).abs() < 1e-12);
    assert!(nwb.notes().unwrap().contains("data_source=real (CRCNS"));

    let (code, text) = lowrank(
        d,
        &[
            "bin",
            "s1.nwb",
            "--bin-ms",
            "10",
            "--segment-s",
            "0.2",
            "--lfp",
            "6,10",
            "--behavior",
            "processing/behavior/Position/position",
            "--out",
            "s1.h5",
        ],
    );
    assert_eq!(code, 0, "{text}");
    // The lost tracking frame (t = 7/39.0625 s) leaves its bin NaN instead of failing the run.
    let nan_bins =
        lowrank_smc::data::sequences_io::read_attr(&d.join("s1.h5"), "behavior_nan_bins")
            .unwrap()
            .unwrap();
    assert!(nan_bins.parse::<usize>().unwrap() >= 2, "{nan_bins}");
}

#[test]
fn broken_sessions_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_session(d);
    // A truncated cluster file.
    let clu = d.join("s1/s1.clu.2");
    let text = std::fs::read_to_string(&clu).unwrap();
    let cut: String = text.lines().take(100).map(|l| format!("{l}\n")).collect();
    std::fs::write(&clu, cut).unwrap();
    let (code, text) = lowrank(d, &["convert-crcns", "s1/s1", "--out", "x.nwb"]);
    assert_ne!(code, 0);
    assert!(
        text.contains("s1.clu.2") && text.contains("truncated"),
        "{text}"
    );
    assert!(!d.join("x.nwb").exists() && !d.join("x.nwb.tmp").exists());
    std::fs::write(&clu, text_of_clu()).unwrap();
    // An LFP file that is not a whole number of frames.
    let eeg = d.join("s1/s1.eeg");
    let mut bytes = std::fs::read(&eeg).unwrap();
    bytes.pop();
    std::fs::write(&eeg, bytes).unwrap();
    let (code, text) = lowrank(d, &["convert-crcns", "s1/s1", "--out", "x.nwb"]);
    assert_ne!(code, 0);
    assert!(
        text.contains("s1.eeg") && text.contains("nChannels"),
        "{text}"
    );
    // No parameter file and no rate given.
    std::fs::remove_file(d.join("s1/s1.xml")).unwrap();
    let (code, text) = lowrank(d, &["convert-crcns", "s1/s1", "--out", "x.nwb"]);
    assert_ne!(code, 0);
    assert!(text.contains("--sampling-rate"), "{text}");
    // No spike files at all.
    let (code, text) = lowrank(d, &["convert-crcns", "nothing/here", "--out", "x.nwb"]);
    assert_ne!(code, 0);
    assert!(text.contains("here"), "{text}");
}

fn text_of_clu() -> String {
    let mut clu = String::from("4\n");
    for i in 0..400u64 {
        clu.push_str(&format!("{}\n", (i * 7 + 2) % 4));
    }
    clu
}
