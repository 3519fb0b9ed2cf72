//! Training checkpoints in HDF5, readable with h5py alone (SPEC §2.10, issue 4 "Training").
//!
//! Layout (all floats f64):
//! - root attributes `format` (= `lowrank-smc checkpoint`), `version`, `model_config` and
//!   `train_config` (JSON strings), `termination` (JSON, empty while the run is going);
//! - `params/<block name>`: one dataset per `ParamBlock` with its shape, attribute `trainable`;
//! - `optimizer/exp_avg/<block>`, `optimizer/exp_avg_sq/<block>`; attribute `optimizer@step`;
//! - `schedule` group attributes `lr`, `gamma`, `lr_end`;
//! - `progress` group attributes `epoch`, `batch` (next to run), `epoch_loss_sum`,
//!   `epoch_seconds`, `best_loss`, `epochs_since_best`, dataset `diagnostic_sums` with attribute
//!   `names` (JSON list);
//! - `loss_curve/{epoch, loss, lr, seconds}` and `loss_curve/diagnostics/<name>` (NaN where an
//!   epoch lacks that diagnostic), attribute `loss_curve/diagnostics@names` (JSON list, in order).
//!
//! A finished fit's `model.h5` ([`save_model`]) has the same layout without the wall-clock
//! times: no `loss_curve/seconds` (read back as NaN) and `progress@epoch_seconds` = 0. So a rerun
//! that learns the same parameters writes the same bytes, and the stages that read the model stay
//! cached; the times are in the fit's `loss_curve` table.
//!
//! Files are written to `<path>.tmp` and renamed, so a crash never leaves a half-written checkpoint.

use super::error::TrainError;
use super::params::ParamLayout;
use super::radam::RAdamState;
use super::schedule::ExponentialDecay;
use super::trainer::{EpochRecord, TrainState};
use hdf5::types::VarLenUnicode;
use std::path::{Path, PathBuf};

/// Value of the root `format` attribute.
pub const CHECKPOINT_FORMAT: &str = "lowrank-smc checkpoint";
/// Value of the root `version` attribute.
pub const CHECKPOINT_VERSION: u64 = 1;

/// The configuration strings stored beside the state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointMeta {
    /// Model configuration (JSON), opaque to the training loop.
    pub model_config_json: String,
    /// `TrainConfig` as JSON.
    pub train_config_json: String,
    /// `TerminationReason` as JSON once the run has ended, else empty.
    pub termination_json: String,
}

/// A loaded checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub state: TrainState,
    pub meta: CheckpointMeta,
}

struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn h5<T>(&self, object: &str, result: hdf5::Result<T>) -> Result<T, TrainError> {
        result.map_err(|source| TrainError::Hdf5 {
            path: self.path.to_path_buf(),
            object: object.to_string(),
            source,
        })
    }

    fn bad(&self, object: &str, problem: impl Into<String>) -> TrainError {
        TrainError::Checkpoint {
            path: self.path.to_path_buf(),
            object: object.to_string(),
            problem: problem.into(),
        }
    }

    fn write_str(&self, loc: &hdf5::Location, name: &str, value: &str) -> Result<(), TrainError> {
        let text: VarLenUnicode = value
            .replace('\0', "")
            .parse()
            .map_err(|e| self.bad(name, format!("cannot store string: {e:?}")))?;
        let attr = self.h5(name, loc.new_attr::<VarLenUnicode>().create(name))?;
        self.h5(name, attr.write_scalar(&text))
    }

    fn write_f64(&self, loc: &hdf5::Location, name: &str, value: f64) -> Result<(), TrainError> {
        let attr = self.h5(name, loc.new_attr::<f64>().create(name))?;
        self.h5(name, attr.write_scalar(&value))
    }

    fn write_u64(&self, loc: &hdf5::Location, name: &str, value: u64) -> Result<(), TrainError> {
        let attr = self.h5(name, loc.new_attr::<u64>().create(name))?;
        self.h5(name, attr.write_scalar(&value))
    }

    fn read_str(&self, loc: &hdf5::Location, object: &str) -> Result<String, TrainError> {
        let attr = self.h5(object, loc.attr(attr_name(object)))?;
        let text: VarLenUnicode = self.h5(object, attr.read_scalar())?;
        Ok(text.as_str().to_string())
    }

    fn read_f64(&self, loc: &hdf5::Location, object: &str) -> Result<f64, TrainError> {
        let attr = self.h5(object, loc.attr(attr_name(object)))?;
        self.h5(object, attr.read_scalar())
    }

    fn read_u64(&self, loc: &hdf5::Location, object: &str) -> Result<u64, TrainError> {
        let attr = self.h5(object, loc.attr(attr_name(object)))?;
        self.h5(object, attr.read_scalar())
    }

    fn read_usize(&self, loc: &hdf5::Location, object: &str) -> Result<usize, TrainError> {
        let value = self.read_u64(loc, object)?;
        usize::try_from(value).map_err(|_| self.bad(object, format!("{value} does not fit usize")))
    }

    fn write_array<T: hdf5::H5Type>(
        &self,
        group: &hdf5::Group,
        name: &str,
        object: &str,
        shape: &[usize],
        data: &[T],
    ) -> Result<hdf5::Dataset, TrainError> {
        let builder = group.new_dataset::<T>();
        let dataset = if shape.is_empty() {
            self.h5(object, builder.shape(()).create(name))?
        } else {
            self.h5(object, builder.shape(shape.to_vec()).create(name))?
        };
        if !data.is_empty() {
            self.h5(object, dataset.write_raw(data))?;
        }
        Ok(dataset)
    }

    /// Reads dataset `name` of `group` (full HDF5 path `object`), checking its shape.
    fn read_array(
        &self,
        group: &hdf5::Group,
        name: &str,
        object: &str,
        shape: &[usize],
    ) -> Result<Vec<f64>, TrainError> {
        let dataset = group.dataset(name).map_err(|_| {
            self.bad(
                object,
                format!("dataset missing (expected shape {shape:?}); was this checkpoint written for another model?"),
            )
        })?;
        let found = dataset.shape();
        if found != shape {
            return Err(self.bad(
                object,
                format!("has shape {found:?}, the model expects {shape:?}"),
            ));
        }
        let len: usize = shape.iter().product();
        if len == 0 {
            return Ok(Vec::new());
        }
        self.h5(object, dataset.read_raw::<f64>())
    }
}

/// The attribute name inside an `object@attribute` path.
fn attr_name(object: &str) -> &str {
    object.rsplit('@').next().unwrap_or(object)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `state` and `meta` to the HDF5 file `path` (via `<path>.tmp` and a rename).
pub fn save_checkpoint(
    path: &Path,
    layout: &ParamLayout,
    state: &TrainState,
    meta: &CheckpointMeta,
) -> Result<(), TrainError> {
    save(path, layout, state, meta, WallTimes::Kept)
}

/// Writes a finished fit's model like [`save_checkpoint`], but without the wall-clock times
/// (module docs): the same state always gives the same bytes.
pub fn save_model(
    path: &Path,
    layout: &ParamLayout,
    state: &TrainState,
    meta: &CheckpointMeta,
) -> Result<(), TrainError> {
    save(path, layout, state, meta, WallTimes::Left)
}

fn save(
    path: &Path,
    layout: &ParamLayout,
    state: &TrainState,
    meta: &CheckpointMeta,
    times: WallTimes,
) -> Result<(), TrainError> {
    if state.params.len() != layout.len()
        || state.optimizer.exp_avg.len() != layout.len()
        || state.optimizer.exp_avg_sq.len() != layout.len()
    {
        return Err(TrainError::Params {
            problem: format!(
                "state holds {} parameters / {} moments, the layout {}",
                state.params.len(),
                state.optimizer.exp_avg.len(),
                layout.len()
            ),
        });
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| TrainError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let tmp = temp_path(path);
    write_file(&tmp, layout, state, meta, times)?;
    std::fs::rename(&tmp, path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether a file records how long the epochs took.
#[derive(Clone, Copy, PartialEq)]
enum WallTimes {
    Kept,
    Left,
}

fn write_file(
    tmp: &Path,
    layout: &ParamLayout,
    state: &TrainState,
    meta: &CheckpointMeta,
    times: WallTimes,
) -> Result<(), TrainError> {
    let ctx = Ctx { path: tmp };
    let file = ctx.h5("file (create)", hdf5::File::create(tmp))?;
    ctx.write_str(&file, "format", CHECKPOINT_FORMAT)?;
    ctx.write_u64(&file, "version", CHECKPOINT_VERSION)?;
    ctx.write_str(&file, "model_config", &meta.model_config_json)?;
    ctx.write_str(&file, "train_config", &meta.train_config_json)?;
    ctx.write_str(&file, "termination", &meta.termination_json)?;

    let params = ctx.h5("params", file.create_group("params"))?;
    let optimizer = ctx.h5("optimizer", file.create_group("optimizer"))?;
    ctx.write_u64(&optimizer, "step", state.optimizer.step)?;
    let exp_avg = ctx.h5("optimizer/exp_avg", optimizer.create_group("exp_avg"))?;
    let exp_avg_sq = ctx.h5("optimizer/exp_avg_sq", optimizer.create_group("exp_avg_sq"))?;
    for block in layout.blocks() {
        let object = format!("params/{}", block.name);
        let range = block.range();
        let dataset = ctx.write_array(
            &params,
            &block.name,
            &object,
            &block.shape,
            &state.params[range.clone()],
        )?;
        ctx.write_u64(&dataset, "trainable", u64::from(block.trainable))?;
        for (group, values, prefix) in [
            (&exp_avg, &state.optimizer.exp_avg, "optimizer/exp_avg"),
            (
                &exp_avg_sq,
                &state.optimizer.exp_avg_sq,
                "optimizer/exp_avg_sq",
            ),
        ] {
            let object = format!("{prefix}/{}", block.name);
            ctx.write_array(
                group,
                &block.name,
                &object,
                &block.shape,
                &values[range.clone()],
            )?;
        }
    }

    let schedule = ctx.h5("schedule", file.create_group("schedule"))?;
    ctx.write_f64(&schedule, "lr", state.lr)?;
    ctx.write_f64(&schedule, "gamma", state.decay.gamma)?;
    ctx.write_f64(&schedule, "lr_end", state.decay.lr_end)?;

    let progress = ctx.h5("progress", file.create_group("progress"))?;
    ctx.write_u64(&progress, "epoch", state.epoch as u64)?;
    ctx.write_u64(&progress, "batch", state.batch as u64)?;
    ctx.write_f64(&progress, "epoch_loss_sum", state.epoch_loss_sum)?;
    let epoch_seconds = match times {
        WallTimes::Kept => state.epoch_seconds,
        WallTimes::Left => 0.0,
    };
    ctx.write_f64(&progress, "epoch_seconds", epoch_seconds)?;
    ctx.write_f64(&progress, "best_loss", state.best_loss)?;
    ctx.write_u64(
        &progress,
        "epochs_since_best",
        state.epochs_since_best as u64,
    )?;
    let (names, sums): (Vec<String>, Vec<f64>) =
        state.epoch_diagnostic_sums.iter().cloned().unzip();
    let sums_ds = ctx.write_array(
        &progress,
        "diagnostic_sums",
        "progress/diagnostic_sums",
        &[sums.len()],
        &sums,
    )?;
    ctx.write_str(&sums_ds, "names", &json_list(&names))?;

    let curve = ctx.h5("loss_curve", file.create_group("loss_curve"))?;
    let records = &state.records;
    let n = records.len();
    let epochs: Vec<u64> = records.iter().map(|r| r.epoch as u64).collect();
    ctx.write_array(&curve, "epoch", "loss_curve/epoch", &[n], &epochs)?;
    let mut columns = vec![
        ("loss", records.iter().map(|r| r.loss).collect::<Vec<_>>()),
        ("lr", records.iter().map(|r| r.lr).collect()),
    ];
    if times == WallTimes::Kept {
        columns.push(("seconds", records.iter().map(|r| r.seconds).collect()));
    }
    for (name, column) in columns {
        ctx.write_array(&curve, name, &format!("loss_curve/{name}"), &[n], &column)?;
    }
    let diagnostics = ctx.h5("loss_curve/diagnostics", curve.create_group("diagnostics"))?;
    let mut diagnostic_names: Vec<String> = Vec::new();
    for record in records {
        for (name, _) in &record.diagnostics {
            if !diagnostic_names.contains(name) {
                diagnostic_names.push(name.clone());
            }
        }
    }
    ctx.write_str(&diagnostics, "names", &json_list(&diagnostic_names))?;
    for name in &diagnostic_names {
        let column: Vec<f64> = records
            .iter()
            .map(|r| r.diagnostic(name).unwrap_or(f64::NAN))
            .collect();
        let object = format!("loss_curve/diagnostics/{name}");
        ctx.write_array(&diagnostics, name, &object, &[n], &column)?;
    }
    ctx.h5("file (flush)", file.flush())
}

fn json_list(names: &[String]) -> String {
    serde_json::to_string(names).unwrap_or_else(|_| "[]".to_string())
}

fn open(path: &Path) -> Result<hdf5::File, TrainError> {
    if !path.exists() {
        return Err(TrainError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "checkpoint file not found (no run has saved here yet?)",
            ),
        });
    }
    let ctx = Ctx { path };
    let file = ctx.h5(
        "file (not an HDF5 file, or corrupt)",
        hdf5::File::open(path),
    )?;
    let format = ctx
        .read_str(&file, "@format")
        .map_err(|_| ctx.bad("@format", "attribute missing: not a lowrank-smc checkpoint"))?;
    if format != CHECKPOINT_FORMAT {
        return Err(ctx.bad(
            "@format",
            format!("is {format:?}, expected {CHECKPOINT_FORMAT:?}"),
        ));
    }
    let version = ctx.read_u64(&file, "@version")?;
    if version != CHECKPOINT_VERSION {
        return Err(ctx.bad(
            "@version",
            format!("is {version}; this program reads version {CHECKPOINT_VERSION}"),
        ));
    }
    Ok(file)
}

/// Reads only the parameters of the checkpoint at `path`, validating every block's shape
/// against `layout` (the error names the offending dataset).
pub fn load_params(path: &Path, layout: &ParamLayout) -> Result<Vec<f64>, TrainError> {
    let file = open(path)?;
    read_blocks(&Ctx { path }, &file, "params", layout)
}

fn read_blocks(
    ctx: &Ctx<'_>,
    file: &hdf5::File,
    group_path: &str,
    layout: &ParamLayout,
) -> Result<Vec<f64>, TrainError> {
    let group = file
        .group(group_path)
        .map_err(|_| ctx.bad(group_path, "group missing"))?;
    let mut values = vec![0.0; layout.len()];
    for block in layout.blocks() {
        let object = format!("{group_path}/{}", block.name);
        let data = ctx.read_array(&group, &block.name, &object, &block.shape)?;
        values[block.range()].copy_from_slice(&data);
    }
    Ok(values)
}

/// Reads a whole checkpoint, validating shapes against `layout`.
pub fn load_checkpoint(path: &Path, layout: &ParamLayout) -> Result<Checkpoint, TrainError> {
    let file = open(path)?;
    let ctx = Ctx { path };
    let meta = CheckpointMeta {
        model_config_json: ctx.read_str(&file, "@model_config")?,
        train_config_json: ctx.read_str(&file, "@train_config")?,
        termination_json: ctx.read_str(&file, "@termination")?,
    };
    let params = read_blocks(&ctx, &file, "params", layout)?;
    let exp_avg = read_blocks(&ctx, &file, "optimizer/exp_avg", layout)?;
    let exp_avg_sq = read_blocks(&ctx, &file, "optimizer/exp_avg_sq", layout)?;
    let optimizer_group = ctx.h5("optimizer", file.group("optimizer"))?;
    let step = ctx.read_u64(&optimizer_group, "optimizer@step")?;

    let schedule = ctx.h5("schedule", file.group("schedule"))?;
    let lr = ctx.read_f64(&schedule, "schedule@lr")?;
    let decay = ExponentialDecay {
        gamma: ctx.read_f64(&schedule, "schedule@gamma")?,
        lr_end: ctx.read_f64(&schedule, "schedule@lr_end")?,
    };

    let progress = ctx.h5("progress", file.group("progress"))?;
    let sums_ds = ctx.h5(
        "progress/diagnostic_sums",
        progress.dataset("diagnostic_sums"),
    )?;
    let names = read_names(&ctx, &sums_ds, "progress/diagnostic_sums@names")?;
    let sums = read_vector(
        &ctx,
        &progress,
        "diagnostic_sums",
        "progress/diagnostic_sums",
    )?;
    if sums.len() != names.len() {
        return Err(ctx.bad(
            "progress/diagnostic_sums",
            format!("{} values for {} names", sums.len(), names.len()),
        ));
    }

    let curve = ctx.h5("loss_curve", file.group("loss_curve"))?;
    let epoch_ds = ctx.h5("loss_curve/epoch", curve.dataset("epoch"))?;
    let epochs: Vec<u64> = if epoch_ds.size() == 0 {
        Vec::new()
    } else {
        ctx.h5("loss_curve/epoch", epoch_ds.read_raw::<u64>())?
    };
    let n = epochs.len();
    let column = |name: &str| -> Result<Vec<f64>, TrainError> {
        let object = format!("loss_curve/{name}");
        let values = read_vector(&ctx, &curve, name, &object)?;
        if values.len() != n {
            return Err(ctx.bad(
                &object,
                format!("{} rows, loss_curve/epoch has {n}", values.len()),
            ));
        }
        Ok(values)
    };
    let (loss, lrs) = (column("loss")?, column("lr")?);
    // A finished model (`save_model`) stores no times.
    let seconds = if curve.link_exists("seconds") {
        column("seconds")?
    } else {
        vec![f64::NAN; n]
    };
    let diagnostics_group = ctx.h5("loss_curve/diagnostics", curve.group("diagnostics"))?;
    let diagnostic_names = read_names(&ctx, &diagnostics_group, "loss_curve/diagnostics@names")?;
    let mut diagnostic_columns = Vec::new();
    for name in &diagnostic_names {
        diagnostic_columns.push(column(&format!("diagnostics/{name}"))?);
    }
    let records = (0..n)
        .map(|i| EpochRecord {
            epoch: epochs[i] as usize,
            loss: loss[i],
            lr: lrs[i],
            seconds: seconds[i],
            diagnostics: diagnostic_names
                .iter()
                .zip(&diagnostic_columns)
                .filter(|(_, column)| !column[i].is_nan())
                .map(|(name, column)| (name.clone(), column[i]))
                .collect(),
        })
        .collect();

    let state = TrainState {
        params,
        optimizer: RAdamState {
            step,
            exp_avg,
            exp_avg_sq,
        },
        lr,
        decay,
        epoch: ctx.read_usize(&progress, "progress@epoch")?,
        batch: ctx.read_usize(&progress, "progress@batch")?,
        epoch_loss_sum: ctx.read_f64(&progress, "progress@epoch_loss_sum")?,
        epoch_diagnostic_sums: names.into_iter().zip(sums).collect(),
        epoch_seconds: ctx.read_f64(&progress, "progress@epoch_seconds")?,
        best_loss: ctx.read_f64(&progress, "progress@best_loss")?,
        epochs_since_best: ctx.read_usize(&progress, "progress@epochs_since_best")?,
        records,
    };
    Ok(Checkpoint { state, meta })
}

fn read_vector(
    ctx: &Ctx<'_>,
    group: &hdf5::Group,
    name: &str,
    object: &str,
) -> Result<Vec<f64>, TrainError> {
    let dataset = group
        .dataset(name)
        .map_err(|_| ctx.bad(object, "dataset missing"))?;
    if dataset.ndim() != 1 {
        return Err(ctx.bad(
            object,
            format!("has shape {:?}, expected 1-D", dataset.shape()),
        ));
    }
    if dataset.size() == 0 {
        return Ok(Vec::new());
    }
    ctx.h5(object, dataset.read_raw::<f64>())
}

fn read_names(
    ctx: &Ctx<'_>,
    loc: &hdf5::Location,
    object: &str,
) -> Result<Vec<String>, TrainError> {
    let text = ctx.read_str(loc, object)?;
    serde_json::from_str(&text)
        .map_err(|e| ctx.bad(object, format!("not a JSON list of names: {e}")))
}
