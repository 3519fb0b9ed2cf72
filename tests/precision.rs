//! `vsmc.precision` through the CLI: an f32 fit runs, records its precision in model.h5 (so
//! `score` uses it too; `generate`'s and `posterior`'s filters run in f64) and tracks the f64
//! fit of the same seed closely; a bad value is refused with a message naming the field.

use std::path::Path;
use std::process::Command;

use lowrank_smc::inference::kernel::Precision;
use lowrank_smc::model::Sequences;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn run(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lowrank-smc"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The `loss` column of a loss-curve table.
fn losses(path: &Path) -> Vec<f64> {
    let t = lowrank_smc::pipeline::table::Table::read_parquet(path).expect("loss curve");
    let col = t.column("loss").expect("loss column");
    (0..t.n_rows()).filter_map(|i| col.number(i)).collect()
}

#[test]
fn f32_fit_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // 6 sequences of 40 steps, 24 channels: enough units (N = 24) for full 8-unit chunks and
    // the f32 kernels' vector path.
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (n, dx, tt) = (6, 24, 40);
    let data = Sequences {
        n_sequences: n,
        dim_x: dx,
        dim_u: 0,
        n_time: tt,
        x: (0..n * dx * tt).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        u: Vec::new(),
    };
    lowrank_smc::data::sequences_io::write_sequences(
        &d.join("data.h5"),
        &data,
        &[("data_source", "simulated (random test data)".into())],
    )
    .expect("write data");
    std::fs::write(
        d.join("fit.yaml"),
        "variant: small\n\
         model: {rank: 2, n_units: 24, dim_x: 24, nonlinearity: tanh, noise_z: full,\n\
         \x20 noise_z0: full, noise_x: diag, observation: one_to_one, readout_from: currents,\n\
         \x20 likelihood: gaussian}\n\
         vsmc: {proposal: optimal, n_particles: 8}\n\
         train: {n_epochs: 3, batch_size: 3, lr: 1.0e-3, lr_end: 1.0e-4, seed: 1}\n",
    )
    .expect("write params");
    let fit = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "exec",
            "fit",
            "--params",
            "fit.yaml",
            "--input",
            "data=data.h5",
            "--out-dir",
            out,
        ];
        args.extend_from_slice(extra);
        run(d, &args)
    };
    let (code, text) = fit("f64", &[]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = fit("f32", &["--set", "vsmc.precision=f32"]);
    assert_eq!(code, 0, "{text}");
    let single = lowrank_smc::stages::fit::load_model(&d.join("f32/model.h5")).expect("model");
    let double = lowrank_smc::stages::fit::load_model(&d.join("f64/model.h5")).expect("model");
    assert_eq!(single.vsmc.precision, Precision::F32);
    assert_eq!(double.vsmc.precision, Precision::F64);
    // Same seed, same draws: the two runs differ by f32 rounding only.
    let (a, b) = (
        losses(&d.join("f32/loss_curve.parquet")),
        losses(&d.join("f64/loss_curve.parquet")),
    );
    assert_eq!(a.len(), 3);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-4 * y.abs(), "f32 {x} vs f64 {y}");
    }
    assert_ne!(a, b, "f32 mode ran in f64");
    // A precision that does not exist.
    let (code, text) = fit("bad", &["--set", "vsmc.precision=f16"]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("precision") && text.contains("f32"),
        "the error names the field and the choices: {text}"
    );
    assert!(!d.join("bad/model.h5").exists(), "nothing half-written");
}
