//! ONNX Runtime: one environment per process, session creation with the execution-provider choice, and the
//! I/O contract check every model goes through at load.

pub mod bound;
pub mod contract;
pub mod ep;
pub mod graph;
pub mod library;
pub mod onnx_graph;
mod settings;
pub mod tensor;
pub mod tensorrt;
mod trt;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ndarray::{Array4, ArrayD, ArrayView4, Ix4};
use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::session::Session;

pub use self::contract::{Binding, Bound, Contract};
pub use self::ep::ExecutionProvider;
use crate::error::{Error, Result};

/// How sessions are created. Cold settings: fixed for the life of the runtime.
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    /// `libonnxruntime.so` to load; `None` searches the default places (see [`library::locate`]).
    pub library: Option<PathBuf>,
    pub execution_provider: ExecutionProvider,
    /// Threads ONNX Runtime uses inside one operator; `None` lets it choose (one per core).
    pub intra_op_threads: Option<usize>,
    /// CUDA graphs for the frame path's sessions (see [`Runtime::with_cuda_graph`]).
    pub cuda_graph: bool,
}

/// The loaded ONNX Runtime and the session settings. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    env: Environment,
    options: RuntimeOptions,
    library: PathBuf,
    logged_ep: std::sync::Arc<Mutex<Option<ExecutionProvider>>>,
    /// One pipeline's TensorRT settings ([`Runtime::with_tensorrt`]); `None`: TensorRT's defaults.
    tensorrt: Option<Arc<tensorrt::TensorRt>>,
}

/// ort loads the library once per process; remember which one so a second, different request is an error
/// rather than silently using the first.
static LOADED: OnceLock<Mutex<Option<(PathBuf, Environment)>>> = OnceLock::new();

impl Runtime {
    pub fn new(options: RuntimeOptions) -> Result<Runtime> {
        let library = library::locate(options.library.as_deref())?;
        let env = load_environment(&library, options.intra_op_threads)?;
        Ok(Runtime { env, options, library, logged_ep: Default::default(), tensorrt: None })
    }

    /// This runtime with ONNX Runtime's CUDA graphs on or off for the sessions the frame path runs through
    /// IoBindings (UNet, VAE, the frame path's graphs); the text encoder never uses them. CPU: no effect.
    pub fn with_cuda_graph(&self, on: bool) -> Runtime {
        let mut runtime = self.clone();
        runtime.options.cuda_graph = on;
        runtime
    }

    /// This runtime with one pipeline's TensorRT settings: fp16 per model and shape profiles for its working size
    /// and batches (see [`tensorrt`]). Only sessions on the TensorRT provider use them.
    pub fn with_tensorrt(&self, settings: tensorrt::TensorRt) -> Runtime {
        let mut runtime = self.clone();
        runtime.tensorrt = Some(Arc::new(settings));
        runtime
    }

    /// The TensorRT settings [`Runtime::with_tensorrt`] gave, if any.
    pub fn tensorrt(&self) -> Option<&tensorrt::TensorRt> {
        self.tensorrt.as_deref()
    }

    pub fn library(&self) -> &Path {
        &self.library
    }

    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// Whether models may run on a GPU (a CUDA or TensorRT provider asked for, or `auto` in a build that has
    /// them): memory limits are then the device's, not the machine's.
    pub fn may_use_gpu(&self) -> bool {
        match self.options.execution_provider {
            ExecutionProvider::Cpu => false,
            ExecutionProvider::Cuda | ExecutionProvider::TensorRt => true,
            ExecutionProvider::Auto => cfg!(feature = "cuda"),
        }
    }

    /// Create a session for `path` and check it against `contract`. `role` names the model in messages.
    pub fn load(&self, role: &'static str, path: &Path, contract: &Contract) -> Result<Model> {
        self.load_with_extras(role, path, contract, &contract::Extras::NONE)
    }

    /// [`Runtime::load`] for roles with a varying number of ports (ControlNet residuals).
    pub fn load_with_extras(
        &self,
        role: &'static str,
        path: &Path,
        contract: &Contract,
        extras: &contract::Extras,
    ) -> Result<Model> {
        if !path.is_file() {
            return Err(Error::ModelLoad {
                role,
                path: path.to_path_buf(),
                cause: crate::error::because("no such file"),
            });
        }
        let started = Instant::now();
        let candidates = self.options.execution_provider.candidates();
        let mut last_err = None;
        for ep in &candidates {
            match self.create_session(*ep, role, path) {
                Ok(session) => {
                    let binding = contract
                        .check_with_extras(session.inputs(), session.outputs(), extras)
                        .map_err(|problem| Error::Contract { role, path: path.to_path_buf(), problem })?;
                    let load_ms = started.elapsed().as_secs_f64() * 1e3;
                    self.log_pick(*ep);
                    tracing::debug!(role, path = %path.display(), ep = %ep, load_ms = load_ms.round(), "model loaded");
                    return Ok(Model { role, path: path.to_path_buf(), session, binding, ep: *ep, load_ms });
                }
                // With `auto`, a GPU provider that does not work is logged and the next one tried; the model
                // itself being broken ends the search (it would fail everywhere).
                Err(e @ Error::ExecutionProvider { .. }) if candidates.len() > 1 => {
                    tracing::warn!(role, ep = %ep, error = %e, "execution provider unavailable, trying the next");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::ModelLoad {
            role,
            path: path.to_path_buf(),
            cause: crate::error::because("no execution provider to try"),
        }))
    }

    /// Say once per runtime where models run (and that `auto` chose it); changes are said again.
    fn log_pick(&self, ep: ExecutionProvider) {
        let mut last = self.logged_ep.lock().unwrap_or_else(|p| p.into_inner());
        if *last != Some(ep) {
            let how = if self.options.execution_provider == ExecutionProvider::Auto { "auto picked" } else { "using" };
            tracing::info!("{how} execution provider {ep} (ONNX Runtime {})", self.library.display());
            *last = Some(ep);
        }
    }

    /// A session for a graph latentcam built ([`graph::GraphBuilder`]), on `ep` (where the models run).
    /// `device_io`: every input and output stays on the device, so the runtime's CUDA-graph setting may apply
    /// (graphs that take the camera frame from host memory or hand the picture back cannot be captured).
    pub fn graph_session(
        &self,
        ep: ExecutionProvider,
        role: &'static str,
        model: ort::editor::Model,
        device_io: bool,
    ) -> Result<Session> {
        let err = |e: ort::Error| Error::internal("graph session", format!("the {role} graph: {e}"));
        let settings = ep::SessionSettings {
            model_path: PathBuf::from(role),
            ort_library: self.library.clone(),
            cuda_graph: self.options.cuda_graph && device_io,
            ..Default::default()
        };
        let mut builder = self.builder(ep, &settings, err)?;
        // ort's `into_session` skips what `commit_from_file` does for an environment with a global thread pool:
        // without this each small graph would get its own pool, whose threads spin after every run and take the
        // cores from the models (measured: the UNet ran 3x slower beside them).
        // SAFETY: a live session builder; the call only sets a flag on it.
        let status = unsafe { (ort::api().DisablePerSessionThreads)(ort::AsPointer::ptr_mut(&mut builder)) };
        // SAFETY: `status` was just returned by the ONNX Runtime API; this takes ownership of it.
        unsafe { ort::Error::result_from_status(status) }.map_err(err)?;
        model.into_session(&builder).map_err(err)
    }

    /// A session builder on this environment with `ep` registered (a provider that fails to register is an
    /// error, never a silent CPU fallback).
    fn builder(
        &self,
        ep: ExecutionProvider,
        settings: &ep::SessionSettings,
        err: impl Fn(ort::Error) -> Error,
    ) -> Result<ort::session::builder::SessionBuilder> {
        let mut builder = Session::builder(&self.env).map_err(&err)?;
        let dispatch = ep.dispatch(settings)?;
        if !dispatch.is_empty() {
            builder = builder.with_execution_providers(dispatch).map_err(|e| Error::ExecutionProvider {
                ep: ep.as_str(),
                cause: crate::error::because(e.to_string()),
            })?;
        }
        Ok(builder)
    }

    fn create_session(&self, ep: ExecutionProvider, role: &'static str, path: &Path) -> Result<Session> {
        let load_err = |e: ort::Error| Error::ModelLoad { role, path: path.to_path_buf(), cause: Box::new(e) };
        let settings = self.session_settings(ep, role, path);
        let created =
            self.builder(ep, &settings, load_err).and_then(|mut b| b.commit_from_file(path).map_err(load_err));
        match created {
            // TensorRT refuses explicit profiles that miss a dynamic input of one of its subgraphs (a model it
            // takes only in parts: ONNX Runtime's contrib ops in a fused fp16 export). Without them ONNX Runtime
            // makes the profiles from the first run, as it does for models latentcam cannot profile.
            Err(e @ Error::ModelLoad { .. }) if !settings.shape_profiles.is_empty() => {
                tracing::warn!(
                    "TensorRT did not take the shape profiles for the {role} ({e}); trying again without them \
                     (ONNX Runtime makes them at the first run)"
                );
                // The shapes still go into the cache key, keeping this engine apart from other sizes'.
                let shapes =
                    |pick: fn(&ep::ShapeProfile) -> &[i64]| trt::profile_shapes(&settings.shape_profiles, pick);
                let hint =
                    format!("{} to {}, tuned for {}", shapes(|p| &p.min), shapes(|p| &p.max), shapes(|p| &p.opt));
                let implicit = ep::SessionSettings { shape_hint: Some(hint), shape_profiles: Vec::new(), ..settings };
                let mut builder = self.builder(ep, &implicit, load_err)?;
                builder.commit_from_file(path).map_err(load_err)
            }
            other => other,
        }
    }

    /// What the session for `role` (the model file `path`) on `ep` is created with: this runtime's CUDA-graph
    /// setting, and on TensorRT the pipeline's fp16 and shape profiles ([`Runtime::with_tensorrt`]).
    pub fn session_settings(&self, ep: ExecutionProvider, role: &str, path: &Path) -> ep::SessionSettings {
        let base = ep::SessionSettings {
            model_path: path.to_path_buf(),
            ort_library: self.library.clone(),
            cuda_graph: self.options.cuda_graph && role != "text encoder",
            ..Default::default()
        };
        match (&self.tensorrt, ep) {
            (Some(trt), ExecutionProvider::TensorRt) => trt.session_settings(role, base),
            _ => base,
        }
    }
}

/// Load the library and create the environment. Sessions share one global intra-op thread pool: latentcam runs
/// its models one after another, and per-session pools would each spin their threads after a run, stealing the
/// cores the next model needs (measured: a 256² tiny-model frame took 2x the sum of its stages).
fn load_environment(library: &Path, intra_op_threads: Option<usize>) -> Result<Environment> {
    let cell = LOADED.get_or_init(|| Mutex::new(None));
    let mut loaded = cell.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((path, env)) = loaded.as_ref() {
        if path == library {
            return Ok(env.clone());
        }
        // (the thread count of the first runtime stays: the pool is created once per process)
        return Err(Error::RuntimeLoad {
            path: library.to_path_buf(),
            cause: crate::error::because(format!("this process already loaded ONNX Runtime from {}", path.display())),
        });
    }
    let builder =
        ort::init_from(library).map_err(|e| Error::RuntimeLoad { path: library.to_path_buf(), cause: Box::new(e) })?;
    let load_err = |e: ort::Error| Error::RuntimeLoad { path: library.to_path_buf(), cause: Box::new(e) };
    let pool =
        GlobalThreadPoolOptions::default().with_intra_threads(intra_op_threads.unwrap_or(0)).map_err(load_err)?;
    let env =
        builder.with_name("latentcam").with_telemetry(false).with_global_thread_pool(pool).build().map_err(load_err)?;
    tracing::debug!(library = %library.display(), "ONNX Runtime loaded");
    *loaded = Some((library.to_path_buf(), env.clone()));
    Ok(env)
}

/// A loaded model: its session (private: one owner, run through the methods below), where its ports are, and
/// where it runs. Running needs `&mut`: one owner (one thread) per session.
pub struct Model {
    pub role: &'static str,
    pub path: PathBuf,
    session: Session,
    pub binding: Binding,
    pub ep: ExecutionProvider,
    pub load_ms: f64,
}

/// Named inputs for [`Model::run_output`], as `ort::inputs!` builds them.
pub(crate) type NamedInputs<'i, 'v> = Vec<(std::borrow::Cow<'i, str>, ort::session::SessionInputValue<'v>)>;

impl Model {
    pub fn describe_inputs(&self) -> String {
        contract::describe_outlets(self.session.inputs())
    }
    pub fn describe_outputs(&self) -> String {
        contract::describe_outlets(self.session.outputs())
    }

    pub(crate) fn contract_error(&self, problem: impl Into<String>) -> Error {
        Error::Contract { role: self.role, path: self.path.clone(), problem: problem.into() }
    }

    /// Run with `inputs` and return the output the contract bound as output `output` as f32 (converted from
    /// f16 for fp16 models), owned.
    pub(crate) fn run_output(&mut self, inputs: NamedInputs, output: usize) -> Result<ArrayD<f32>> {
        let stage = self.role;
        let err = |e: ort::Error| Error::inference(stage, e);
        let output_name = self.binding.output(output).name.clone();
        let outputs = self.session.run(inputs).map_err(err)?;
        let out =
            outputs.get(&output_name).ok_or_else(|| Error::inference(stage, format!("no output `{output_name}`")))?;
        tensor::to_f32(out)
    }

    /// Every output's name, in the session's order.
    pub fn output_names(&self) -> Vec<String> {
        self.session.outputs().iter().map(|o| o.name().to_string()).collect()
    }

    /// Dimension `axis` of the session's output number `index`, when it is fixed.
    pub fn output_dim(&self, index: usize, axis: usize) -> Option<i64> {
        let outlet = self.session.outputs().get(index)?;
        let shape = outlet.dtype().tensor_shape()?;
        shape.get(axis).copied().filter(|d| *d > 0)
    }

    /// Run with `inputs` and return the outputs named `names`, in that order, as f32 (converted from f16).
    pub(crate) fn run_outputs_named(&mut self, inputs: NamedInputs, names: &[String]) -> Result<Vec<ArrayD<f32>>> {
        let stage = self.role;
        let outputs = self.session.run(inputs).map_err(|e| Error::inference(stage, e))?;
        names
            .iter()
            .map(|name| {
                let out = outputs.get(name).ok_or_else(|| Error::inference(stage, format!("no output `{name}`")))?;
                tensor::to_f32(out)
            })
            .collect()
    }

    /// `values` as the value for input port `port`, in the element type the model declares (f32 values are
    /// passed by reference; f16 ports get a converted copy).
    pub(crate) fn input_value<'v, D: ndarray::Dimension + 'static>(
        &self,
        port: usize,
        values: ndarray::ArrayView<'v, f32, D>,
    ) -> Result<ort::session::SessionInputValue<'v>> {
        let stage = self.role;
        match self.binding.input(port).ty {
            ort::value::TensorElementType::Float16 => {
                Ok(tensor::host_tensor(ort::value::TensorElementType::Float16, values.into_dyn())?.into_dyn().into())
            }
            _ => Ok(ort::value::TensorRef::from_array_view(values).map_err(|e| Error::inference(stage, e))?.into()),
        }
    }

    /// Run a model with one float rank-4 input and one float rank-4 output (the contract's first ports).
    pub(crate) fn run_image(&mut self, input: ArrayView4<f32>) -> Result<Array4<f32>> {
        let stage = self.role;
        let input_name = self.binding.input(0).name.clone();
        let value = self.input_value(0, input)?;
        let out = self.run_output(vec![(input_name.into(), value)], 0)?;
        out.into_dimensionality::<Ix4>().map_err(|e| Error::inference(stage, e))
    }

    /// The session, for the frame path's IoBindings (which run it through [`bound::run`]).
    pub(crate) fn session(&self) -> &Session {
        &self.session
    }
    pub(crate) fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Element type of input port `port` / output port `port`.
    pub fn input_type(&self, port: usize) -> ort::value::TensorElementType {
        self.binding.input(port).ty
    }
    pub fn output_type(&self, port: usize) -> ort::value::TensorElementType {
        self.binding.output(port).ty
    }
}
