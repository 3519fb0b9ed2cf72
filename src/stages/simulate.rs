//! The `simulate` kind: trials simulated from a teacher RNN's latent form (SPEC §5.1,
//! TEACHERS.md §2) — the data a student is fitted to, its stimulus as the student's input, and
//! the teacher's true latents.
//!
//! ```yaml
//! - name: ts.osc.simulate
//!   kind: simulate
//!   params:
//!     seed: 1
//!     task: {task: none}
//!     simulation:
//!       n_trials: 200
//!       n_time: 75
//!       latent_noise_std: 0.2
//!       observation: {type: currents, noise_std: 0.1}
//!       initial_latent: {radius: 2.0, radius_is_gaussian_scale: true}
//!   inputs: {teacher: "dataset:teacher_osc_rnn"}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::sequences_io::write_sequences;
use crate::data::simulate::{simulate, SimulationConfig, StimulusTask, TeacherBasis};
use crate::model::Sequences;
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};
use crate::plot::{line_plot, Series};

/// Params of a `simulate` stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateParams {
    /// Seed of the stimulus, initial states and noise.
    pub seed: u64,
    /// The teacher's task stimulus (`none`, `reach`, `rdm`).
    pub task: StimulusTask,
    /// Trials, length, noise levels, observation model, initial latent.
    pub simulation: SimulationConfig,
}

/// Simulates teacher data.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimulateStage;

/// Reads a teacher file.
pub fn read_teacher(path: &std::path::Path) -> Result<(Value, TeacherBasis), StageError> {
    let text = std::fs::read_to_string(path).map_err(|e| StageError::io(path, e))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| StageError::new(format!("{}: not valid JSON: {e}", path.display())))?;
    let t = TeacherBasis::from_json(&doc)
        .map_err(|e| StageError::new(format!("{}: {e}", path.display())))?;
    Ok((doc, t))
}

impl Stage for SimulateStage {
    fn kind(&self) -> &'static str {
        "simulate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn description(&self) -> &'static str {
        "simulate trials from a teacher RNN (currents or Poisson data, task stimulus) → sequences + true latents"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let v = canonical_params::<SimulateParams>(params)?;
        let p: SimulateParams = serde_json::from_value(v.clone())
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        let s = &p.simulation;
        if s.n_trials == 0 || s.n_time == 0 {
            return Err(ParamError::new(
                "simulation.n_trials",
                "n_trials and n_time must be ≥ 1",
            ));
        }
        if !(s.latent_noise_std.is_finite() && s.latent_noise_std >= 0.0) {
            return Err(ParamError::new(
                "simulation.latent_noise_std",
                "must be finite and ≥ 0",
            ));
        }
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new("sequences", "sequences.h5"),
            OutputSpec::new("latents", "latents.h5"),
            OutputSpec::new("figure", "latents.png"),
        ]
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![InputSpec::required("teacher")])
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p: SimulateParams = ctx.params_as()?;
        let teacher_path = ctx.input("teacher")?.to_path_buf();
        let (doc, teacher) = read_teacher(&teacher_path)?;
        let name = doc
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("teacher")
            .to_string();
        // Tasks without input still drive teachers that have (unused) input weights with 0.
        let mut basis = teacher.clone();
        if p.task.dim() != basis.dim_input {
            if p.task.dim() == 0 {
                basis.dim_input = 0;
                basis.input_weights.clear();
            } else {
                return Err(StageError::new(format!(
                    "params.task gives {} input channels; the teacher {} has {}",
                    p.task.dim(),
                    teacher_path.display(),
                    basis.dim_input
                )));
            }
        }
        let sim = simulate(&basis, &p.task, &p.simulation, p.seed)
            .map_err(|e| StageError::new(format!("params.simulation: {e}")))?;
        let (nt, tt, r) = (p.simulation.n_trials, p.simulation.n_time, basis.rank);
        let attrs = [
            ("data_source", "simulated".to_string()),
            ("teacher", name.clone()),
            (
                "latent_noise_std",
                p.simulation.latent_noise_std.to_string(),
            ),
            (
                "simulation",
                serde_json::to_string(&p.simulation).unwrap_or_default(),
            ),
        ];
        let out = ctx.output("sequences")?.to_path_buf();
        write_sequences(&out, &sim.sequences, &attrs)
            .map_err(|e| StageError::new(e.to_string()))?;
        let latents = Sequences {
            n_sequences: nt,
            dim_x: r,
            dim_u: 0,
            n_time: tt,
            x: sim.latents.clone(),
            u: Vec::new(),
        };
        let out = ctx.output("latents")?.to_path_buf();
        write_sequences(&out, &latents, &attrs).map_err(|e| StageError::new(e.to_string()))?;
        // A few trials' latents over time.
        let mut series = Vec::new();
        for trial in 0..nt.min(3) {
            for q in 0..r {
                let base = (trial * r + q) * tt;
                series.push(Series {
                    reference_for: None,
                    label: format!("trial {trial}, z{}", q + 1),
                    x: (0..tt).map(|t| t as f64).collect(),
                    y: sim.latents[base..base + tt].to_vec(),
                });
            }
        }
        let stem = ctx.scratch_dir().join("latents");
        let fig = line_plot(
            &stem,
            &format!("{name}: true latents of simulated trials (data_source = simulated)"),
            "time step",
            "latent",
            &series,
            false,
        )
        .map_err(|e| StageError::new(e.to_string()))?;
        ctx.place_output("figure", &fig.png)?;
        ctx.record("n_trials", nt);
        ctx.record("n_time", tt);
        Ok(())
    }
}
