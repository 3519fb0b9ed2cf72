//! The `surrogate` kind: a labelled surrogate recording written as a real NWB file
//! (`src/data/surrogate.rs`) — for machines that cannot download the real data.
//!
//! ```yaml
//! - name: hc.surrogate
//!   kind: surrogate
//!   params: {recording: hippocampus, seed: 1, duration_s: 300}
//! - name: maze.surrogate
//!   kind: surrogate
//!   params: {recording: maze, seed: 1, n_trials: 500}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::surrogate::{Hippocampus, Maze};
use crate::pipeline::stage::{
    canonical_params, InputSpec, OutputSpec, ParamError, Stage, StageContext, StageError,
};

/// Which surrogate, with its params.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "recording", rename_all = "snake_case")]
pub enum SurrogateParams {
    /// Rat hippocampus on a linear track (hc-11 layout).
    Hippocampus(Hippocampus),
    /// Macaque maze reaching (MC_Maze layout).
    Maze(Maze),
}

/// Writes a surrogate NWB recording.
#[derive(Debug, Clone, Copy, Default)]
pub struct SurrogateStage;

impl Stage for SurrogateStage {
    fn kind(&self) -> &'static str {
        "surrogate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn description(&self) -> &'static str {
        "write a labelled surrogate recording (rat hippocampus or macaque maze) as an NWB file"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let v = canonical_params::<SurrogateParams>(params)?;
        let p: SurrogateParams = serde_json::from_value(v.clone())
            .map_err(|e| ParamError::new("params", e.to_string()))?;
        match &p {
            SurrogateParams::Hippocampus(h) => h.check(),
            SurrogateParams::Maze(m) => m.check(),
        }
        .map_err(|e| ParamError::new("params", e))?;
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputSpec> {
        vec![OutputSpec::new("nwb", "recording.nwb")]
    }
    fn expected_inputs(&self, _params: &Value) -> Option<Vec<InputSpec>> {
        Some(vec![])
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p: SurrogateParams = ctx.params_as()?;
        let out = ctx.output("nwb")?.to_path_buf();
        let s = match &p {
            SurrogateParams::Hippocampus(h) => h.write(&out),
            SurrogateParams::Maze(m) => m.write(&out),
        }
        .map_err(|e| StageError::new(e.to_string()))?;
        ctx.record("n_units", s.n_units);
        ctx.record("n_spikes", s.n_spikes);
        ctx.record("n_trials", s.n_trials);
        ctx.record("duration_s", s.duration_s);
        Ok(())
    }
}
