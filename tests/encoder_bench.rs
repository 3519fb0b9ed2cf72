//! Prints the encoder benchmark (no timing assertions). Run with
//! `cargo test --release --test encoder_bench -- --ignored --nocapture`.

#[test]
#[ignore = "benchmark: run explicitly in release mode"]
fn print_encoder_benchmark() {
    let lines = lowrank_smc::model::encoder::bench_encoder();
    assert_eq!(lines.len(), 2, "benchmark setup failed");
    for line in lines {
        println!(
            "{}: {:.4} s ({:.1} GFLOP, {:.1} GFLOP/s), budget {:.2} s, ratio {:.2}, workspaces {:.1} MB",
            line.case,
            line.seconds,
            line.gflop,
            line.gflop / line.seconds,
            line.reference_seconds,
            line.ratio,
            line.workspace_bytes as f64 / 1e6
        );
    }
}
