//! Stage kinds: each implements the pipeline `Stage` trait in one file and is registered with
//! one line in [`registry`].

pub mod bin;
pub mod command;
pub mod evaluate;
pub mod fit;
pub mod fixed_points;
pub mod generate;
pub mod plot_curves;
pub mod plot_traces;
pub mod posterior;
pub mod prepare;
pub mod simulate;
pub mod summarize;
pub mod surrogate;
pub mod teacher_student;
pub mod teacher_train;

use crate::pipeline::stage::Registry;

/// Every stage kind this build knows, by its YAML `kind:` string.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(bin::BinStage);
    registry.register(command::CommandStage);
    registry.register(evaluate::EvaluateStage);
    registry.register(fit::FitStage);
    registry.register(fixed_points::FixedPointsStage);
    registry.register(generate::GenerateStage);
    registry.register(plot_curves::PlotCurvesStage);
    registry.register(plot_traces::PlotTracesStage);
    registry.register(posterior::PosteriorStage);
    registry.register(prepare::PrepareStage);
    registry.register(simulate::SimulateStage);
    registry.register(summarize::SummarizeStage);
    registry.register(surrogate::SurrogateStage);
    registry.register(teacher_student::TeacherStudentStage);
    registry.register(teacher_train::TeacherTrainStage);
    registry
}
