//! The run's thread budget: a stage that borrows idle tokens grows onto the cores another stage
//! freed, and a fit gives the same bits whatever pool each minibatch runs on.

use std::time::{Duration, Instant};

mod common;

use lowrank_smc::inference::draws::Resampling;
use lowrank_smc::inference::kernel::Precision;
use lowrank_smc::inference::objective::{ModelWithProposal, ProposalKind, VsmcObjective};
use lowrank_smc::inference::optimal::VsmcOptions;
use lowrank_smc::model::lowrank::ModelConfig;
use lowrank_smc::pipeline::events::PlainReporter;
use lowrank_smc::pipeline::executor::{run, RunOptions};
use lowrank_smc::pipeline::stage::{
    OutputSpec, ParamError, Registry, Stage, StageContext, StageError,
};
use lowrank_smc::train::trainer::{self, train, TrainConfig};
use lowrank_smc::train::BatchSource;
use serde_json::Value;

/// Calls `install_elastic` and records the pool size it ran on: once, or (with
/// `wait_for_two`) until it runs on two threads (20 s at most); then sleeps `sleep_ms`.
struct Probe;

impl Stage for Probe {
    fn kind(&self) -> &'static str {
        "probe"
    }
    fn version(&self) -> u32 {
        1
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        Ok(params.clone())
    }
    fn outputs(&self, _: &Value) -> Vec<OutputSpec> {
        vec![OutputSpec::new("out", "threads.txt")]
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let wait = ctx.params().get("wait_for_two").and_then(Value::as_bool) == Some(true);
        let sleep = ctx
            .params()
            .get("sleep_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let n = ctx.install_elastic(rayon::current_num_threads);
            seen.push(n.to_string());
            if !wait || n >= 2 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(sleep));
        let out = ctx.output("out")?.to_path_buf();
        let text = format!("{}\nnow {}", seen.join(","), ctx.threads_now());
        std::fs::write(&out, text).map_err(|e| StageError::io(&out, e))
    }
}

#[test]
fn a_running_stage_grows_onto_the_thread_another_stage_freed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        "stages:\n  - name: long\n    kind: probe\n    params: {wait_for_two: true}\n  \
         - name: short\n    kind: probe\n    params: {sleep_ms: 100}\n",
    )
    .unwrap();
    let mut registry = Registry::new();
    registry.register(Probe);
    let dag =
        lowrank_smc::pipeline::dag::load(&dir.path().join("pipeline.yaml"), "paper", &registry)
            .unwrap();
    let options = RunOptions {
        jobs: 2,
        ..RunOptions::default()
    };
    let mut reporter = PlainReporter::new(std::io::sink(), false);
    let summary = run(&dag, &registry, &options, &mut reporter).unwrap();
    assert_eq!(summary.failed, 0);
    let read = |name: &str| {
        std::fs::read_to_string(dir.path().join(format!("results/{name}/threads.txt"))).unwrap()
    };
    // Both started on one thread each; `long` ran on two once `short` had ended.
    assert_eq!(read("short"), "1\nnow 1");
    let long = read("long");
    assert!(
        long.starts_with("1,") && long.ends_with(",2\nnow 2"),
        "long ran on {long}"
    );
}

#[test]
fn outside_a_pipeline_install_elastic_uses_the_stages_threads() {
    let (params, inputs, labels) = (Value::Null, Default::default(), Default::default());
    let dir = tempfile::tempdir().unwrap();
    let ctx = StageContext::new(
        "probe",
        &params,
        &inputs,
        Default::default(),
        &labels,
        lowrank_smc::pipeline::stage::ProgressHandle::disconnected(),
        3,
        dir.path(),
        dir.path().join("scratch"),
    );
    assert_eq!(ctx.threads_now(), 3);
    assert_eq!(ctx.install_elastic(rayon::current_num_threads), 3);
    assert_eq!(ctx.threads_now(), 3);
}

/// A short optimal-proposal fit gives the same parameters, bit for bit, when its minibatches
/// alternate between pools of one and two threads.
#[test]
fn a_fit_is_the_same_bits_whatever_pool_each_minibatch_runs_on() {
    let sequences = common::osc_currents(&common::osc_teacher(), 20, 40, 0.2);
    let config = ModelConfig::continuous_student();
    let model = ModelWithProposal::new(config, ProposalKind::Optimal, None).unwrap();
    let init = model.init_params(1).unwrap();
    let init_bits: Vec<u64> = init.iter().map(|x| x.to_bits()).collect();
    let objective = VsmcObjective::with_proposal(
        model,
        VsmcOptions {
            n_particles: 8,
            t_forward: 0,
            precision: Precision::F64,
        },
        Resampling::Systematic,
    );
    let source = BatchSource::trials(sequences).unwrap();
    let train_config = TrainConfig::new(4, 5, 1e-2, 1e-3, 1);
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1);
    let plain = one
        .install(|| {
            train(
                &objective,
                &source,
                &train_config,
                init.clone(),
                trainer::RunOptions::default(),
            )
        })
        .unwrap();
    let pools = [pool(1), pool(2)];
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let runner = |step: &mut (dyn FnMut() + Send)| {
        let i = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        pools[i % 2].install(step)
    };
    let alternating = train(
        &objective,
        &source,
        &train_config,
        init,
        trainer::RunOptions {
            step_runner: Some(&runner),
            ..trainer::RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(calls.into_inner(), 4 * 4, "one call per minibatch");
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&plain.state.params), bits(&alternating.state.params));
    assert_ne!(
        bits(&plain.state.params),
        init_bits,
        "training moved the parameters"
    );
}
