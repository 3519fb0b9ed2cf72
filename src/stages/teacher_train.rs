//! The `teacher_train` kind: train a teacher RNN on its task from scratch
//! (`src/model/teacher.rs`) and write it as a teacher JSON that `simulate`, `teacher_student`
//! and `fixed_points` read like the paper's (`datasets/teachers/*.json`).
//!
//! ```yaml
//! - name: teachers.osc
//!   kind: teacher_train
//!   params:
//!     name: osc_rnn_new
//!     model: {n_units: 20, rank: 2}
//!     task: {task: sine, dur: 200, n_cycles: 4, n_trials: 50}
//!     train: {n_epochs: 500, lr: 0.01, batch_size: 4, clip_gradient: 1, l2_rates_reg: 1, seed: 1}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::teacher::{Teacher, TeacherNet, TeacherTask, TeacherTrain};
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};
use crate::pipeline::table::Table;
use crate::plot::{line_plot, Series};

/// Params of a `teacher_train` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherTrainParams {
    /// Name written into the JSON.
    pub name: String,
    /// The network.
    pub model: TeacherNet,
    /// Its task.
    pub task: TeacherTask,
    /// Optimiser settings.
    pub train: TeacherTrain,
}

/// Trains a teacher.
#[derive(Debug, Clone, Copy, Default)]
pub struct TeacherTrainStage;

impl Stage for TeacherTrainStage {
    fn kind(&self) -> &'static str {
        "teacher_train"
    }
    fn version(&self) -> u32 {
        // 2: the JSON's dataset basis from `low_rank_svd` (nalgebra's SVD of the N × N
        // weights could return wrong singular values, so U V missed W).
        2
    }
    fn description(&self) -> &'static str {
        "train a teacher RNN (sine / reach / RDM task) from scratch → teacher JSON, loss curve, outputs vs targets"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let v = canonical_params::<TeacherTrainParams>(params)?;
        let p: TeacherTrainParams = serde_json::from_value(v.clone())
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        Teacher::new(p.model, p.task, p.train.seed)
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        if p.train.n_epochs == 0 {
            return Err(ParamError::new("train.n_epochs", "must be ≥ 1"));
        }
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new("teacher", "teacher.json"),
            OutputSpec::new("loss_curve", "loss_curve.parquet"),
            OutputSpec::new("loss_curve_md", "loss_curve.md"),
            OutputSpec::new("loss_plot", "loss_curve.png"),
            OutputSpec::new("outputs_plot", "outputs.png"),
        ]
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![])
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p: TeacherTrainParams = ctx.params_as()?;
        let err = |e: crate::model::teacher::TeacherError| StageError::new(e.to_string());
        let mut teacher =
            Teacher::new(p.model.clone(), p.task.clone(), p.train.seed).map_err(err)?;
        let progress = ctx.progress();
        progress.set_total(p.train.n_epochs as u64);
        let curve = ctx
            .install(|| {
                teacher.train(&p.train, |epoch, loss| {
                    progress.set_position(epoch as u64 + 1);
                    progress.message(format!("loss {loss:.5}"));
                })
            })
            .map_err(err)?;
        let final_loss = curve.last().copied().unwrap_or(f64::NAN);
        let doc = teacher.to_json(&p.name, &p.train, final_loss);
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| StageError::new(format!("serialising the teacher: {e}")))?;
        let out = ctx.output("teacher")?.to_path_buf();
        std::fs::write(&out, text).map_err(|e| StageError::io(&out, e))?;

        let tab = |e: crate::pipeline::table::TableError| StageError::new(e.to_string());
        let table = Table::new()
            .with("epoch", (0..curve.len() as i64).collect::<Vec<_>>())
            .and_then(|t| t.with("loss", curve.clone()))
            .and_then(|t| t.with("name", vec![p.name.clone(); curve.len()]))
            .map_err(tab)?;
        table
            .write_parquet(ctx.output("loss_curve")?)
            .map_err(tab)?;
        table
            .write_markdown(ctx.output("loss_curve_md")?)
            .map_err(tab)?;
        let fig = line_plot(
            &ctx.scratch_dir().join("loss"),
            &format!("teacher {}: training loss", p.name),
            "epoch",
            "loss (masked MSE + rate penalty)",
            &[Series {
                reference_for: None,
                label: "loss".into(),
                x: (0..curve.len()).map(|e| e as f64).collect(),
                y: curve.clone(),
            }],
            true,
        )
        .map_err(|e| StageError::new(e.to_string()))?;
        ctx.place_output("loss_plot", &fig.png)?;

        // Noise-free outputs against targets for a few trials of the task.
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(p.train.seed);
        let t_len = p.task.trial_len();
        let (_, n_out) = p.task.dims();
        let zeros = vec![0.0; t_len * p.model.n_units];
        let mut series = Vec::new();
        for k in 0..p.task.n_trials().min(4) {
            let (u, target, mask) = p.task.trial(k, &mut rng);
            let (_, y) = teacher.run_trial(&teacher.params, &u, &zeros);
            let x: Vec<f64> = (0..t_len).map(|t| t as f64).collect();
            series.push(Series {
                reference_for: None,
                label: format!("trial {k} output"),
                x: x.clone(),
                y: (0..t_len).map(|t| y[t * n_out]).collect(),
            });
            series.push(Series {
                reference_for: None,
                label: format!("trial {k} target"),
                x,
                y: (0..t_len)
                    .map(|t| {
                        if mask[t * n_out] > 0.0 {
                            target[t * n_out]
                        } else {
                            f64::NAN
                        }
                    })
                    .collect(),
            });
        }
        let fig = line_plot(
            &ctx.scratch_dir().join("outputs"),
            &format!("teacher {}: output 1 vs target (noise-free)", p.name),
            "step",
            "output",
            &series,
            false,
        )
        .map_err(|e| StageError::new(e.to_string()))?;
        ctx.place_output("outputs_plot", &fig.png)?;
        ctx.record("final_loss", final_loss);
        ctx.record("first_loss", curve.first().copied().unwrap_or(f64::NAN));
        Ok(())
    }
}
