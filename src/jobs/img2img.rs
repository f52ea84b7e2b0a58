//! `latentcam img2img`: one still image through the model.

use std::path::PathBuf;
use std::time::Instant;

use super::{DiffusionRequest, claim_paths};
use crate::config;
use crate::diffusion::scheduler::Schedule;
use crate::diffusion::{Diffusion, Params};
use crate::error::{Error, Result};
use crate::imaging::{self, OutputImage};
use crate::infer::Runtime;
use crate::model::ModelFolder;
use crate::paths::{NamedPath, OutputLock};
use crate::sizing::{self, SizeOrigin};

/// The files of a model folder, as inputs of a command.
fn model_reads(folder: &ModelFolder) -> Vec<NamedPath> {
    folder.files().into_iter().map(|f| NamedPath::new("model file", f)).collect()
}

/// `latentcam img2img IN OUT ...` as given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Img2ImgRequest {
    pub input: PathBuf,
    pub output: PathBuf,
    pub diffusion: DiffusionRequest,
    /// `WxH`: resize (cover + center crop) instead of cropping to the model's multiple.
    pub size: Option<String>,
}

/// A checked still-image job: nothing runs until [`Img2ImgJob::run`].
pub struct Img2ImgJob {
    pub input: PathBuf,
    pub output: OutputImage,
    /// The output's lock, held while the job lives.
    pub locks: Vec<OutputLock>,
    pub folder: ModelFolder,
    pub params: Params,
    pub schedule: Schedule,
    /// `--size`; None: the input's aspect at about the model's native area ([`crate::sizing`]).
    pub size: Option<config::WorkingSize>,
}

impl Img2ImgRequest {
    /// Cheap checks first (the output, the flags, the model's manifest), so a typo fails before seconds of
    /// model loading.
    pub fn check(&self) -> Result<Img2ImgJob> {
        let input = [NamedPath::new("input", &self.input)];
        crate::paths::check_distinct(&input, &[NamedPath::new("output", &self.output)])?;
        let output = OutputImage::create(&self.output)?;
        let (folder, params, schedule) = self.diffusion.resolve()?;
        let reads: Vec<NamedPath> = input.into_iter().chain(model_reads(&folder)).collect();
        let locks = claim_paths(&reads, &[NamedPath::new("output", &self.output)])?;
        let multiple = folder.size_multiple_for(&schedule);
        let size = match &self.size {
            Some(text) => {
                let (width, height) = super::size_flag(text)?;
                Some(config::WorkingSize::new(width, height, multiple).map_err(|e| Error::invalid("--size", e))?)
            }
            None => None,
        };
        Ok(Img2ImgJob { input: self.input.clone(), output, locks, folder, params, schedule, size })
    }
}

/// What an img2img run did, for the log.
#[derive(Clone, Debug)]
pub struct Img2ImgReport {
    pub output: PathBuf,
    pub width: u32,
    pub height: u32,
    pub timesteps: Vec<u32>,
    pub load_ms: f64,
    pub times: crate::diffusion::StageTimes,
}

impl Img2ImgJob {
    pub fn run(self, runtime: &Runtime) -> Result<Img2ImgReport> {
        let input = imaging::load_rgb(&self.input)?;
        let multiple = self.folder.size_multiple_for(&self.schedule);
        let (width, height) = input.dimensions();
        let (size, origin) = match self.size {
            Some(size) => (size, SizeOrigin::Given),
            None => (
                sizing::default_size(width, height, self.folder.native_size, multiple)
                    .map_err(|e| Error::invalid("--size", format!("the input image is {e}")))?,
                SizeOrigin::Default,
            ),
        };
        let batch = crate::memory::unet_batch(1, self.params.guidance);
        let refuse = |problem: String| Error::invalid("--size", problem);
        let size = sizing::ensure_fits(&self.folder, size, batch, origin, runtime.may_use_gpu(), &refuse)?;
        if let Some(fit) = sizing::describe_fit(width, height, size) {
            tracing::info!("working size {size}: the input's {fit}");
        }
        let fitted = imaging::fit_image(&input, size)?;
        let started = Instant::now();
        let mut diffusion = Diffusion::load(runtime, &self.folder)?;
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        let prepared = diffusion.prepare(&self.params)?;
        let tensor = imaging::to_tensor(&fitted);
        let result = diffusion.run(&prepared, tensor.view()).map_err(|e| e.or_out_of_memory(size.dims(), multiple))?;
        let image = imaging::from_tensor(result.view());
        let output = self.output.path().to_path_buf();
        self.output.write(&image)?;
        Ok(Img2ImgReport {
            output,
            width: image.width(),
            height: image.height(),
            timesteps: self.schedule.timesteps().to_vec(),
            load_ms,
            times: diffusion.last_times(),
        })
    }
}
