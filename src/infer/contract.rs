//! I/O contracts: what each model role must look like, checked against the session's own metadata at load.
//!
//! Exporters differ (optimum, diffusers' old scripts, taesd's own ONNX files), so a port accepts a few names and
//! element types; what it never does is guess silently. A mismatch names the expected and the found signature.

use ort::value::{Outlet, TensorElementType, ValueType};

/// One input or output a role needs (or may use).
#[derive(Debug)]
pub struct Port {
    /// Accepted names, the conventional one first.
    pub names: &'static [&'static str],
    pub types: &'static [TensorElementType],
    pub ranks: &'static [usize],
    pub required: bool,
}

/// The contract of one model role.
#[derive(Debug)]
pub struct Contract {
    pub inputs: &'static [Port],
    pub outputs: &'static [Port],
}

/// A port as the session actually has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub name: String,
    pub ty: TensorElementType,
    /// Dimensions; -1 where the model leaves a dimension dynamic.
    pub shape: Vec<i64>,
}

impl Bound {
    /// The static size of dimension `axis`, if the model fixes it.
    pub fn dim(&self, axis: usize) -> Option<i64> {
        self.shape.get(axis).copied().filter(|d| *d >= 0)
    }
}

/// The ports of one session, in contract order (`None` for an optional port the model lacks).
#[derive(Debug, Clone)]
pub struct Binding {
    pub inputs: Vec<Option<Bound>>,
    pub outputs: Vec<Option<Bound>>,
    /// Ports matched by a name prefix ([`Contract::check_with_extras`]), in the model's order: ControlNet
    /// residuals, whose count depends on the UNet's depth.
    pub extra_inputs: Vec<Bound>,
    pub extra_outputs: Vec<Bound>,
}

impl Binding {
    /// The bound input at contract index `i`; only call for required ports.
    pub fn input(&self, i: usize) -> &Bound {
        self.inputs[i].as_ref().expect("required input is bound by Contract::check")
    }
    pub fn output(&self, i: usize) -> &Bound {
        self.outputs[i].as_ref().expect("required output is bound by Contract::check")
    }
}

fn tensor_of(outlet: &Outlet) -> Option<(TensorElementType, Vec<i64>, Vec<String>)> {
    match outlet.dtype() {
        ValueType::Tensor { ty, shape, dimension_symbols } => {
            Some((*ty, shape.iter().copied().collect(), dimension_symbols.iter().cloned().collect()))
        }
        _ => None,
    }
}

/// `name: f32[batch,4,height,width]` for a session's port.
pub fn describe_outlet(outlet: &Outlet) -> String {
    match tensor_of(outlet) {
        Some((ty, shape, symbols)) => {
            let dims: Vec<String> = shape
                .iter()
                .zip(symbols.iter().chain(std::iter::repeat(&String::new())))
                .map(|(d, s)| match (*d, s.is_empty()) {
                    (-1, false) => s.clone(),
                    (-1, true) => "?".into(),
                    (d, _) => d.to_string(),
                })
                .collect();
            format!("{}: {}[{}]", outlet.name(), ty, dims.join(","))
        }
        None => format!("{}: {}", outlet.name(), outlet.dtype()),
    }
}

pub fn describe_outlets(outlets: &[Outlet]) -> String {
    if outlets.is_empty() {
        return "(none)".into();
    }
    outlets.iter().map(describe_outlet).collect::<Vec<_>>().join(", ")
}

fn describe_port(port: &Port) -> String {
    let types: Vec<String> = port.types.iter().map(|t| t.to_string()).collect();
    let ranks: Vec<String> = port.ranks.iter().map(|r| r.to_string()).collect();
    format!(
        "{}{} ({}, rank {})",
        port.names.join(" | "),
        if port.required { "" } else { " (optional)" },
        types.join(" or "),
        ranks.join(" or ")
    )
}

impl Contract {
    pub fn describe_inputs(&self) -> String {
        self.inputs.iter().map(describe_port).collect::<Vec<_>>().join(", ")
    }
    pub fn describe_outputs(&self) -> String {
        self.outputs.iter().map(describe_port).collect::<Vec<_>>().join(", ")
    }

    /// Match the session's inputs and outputs to this contract. The error text is the problem only; the
    /// caller adds the role and the file.
    pub fn check(&self, inputs: &[Outlet], outputs: &[Outlet]) -> Result<Binding, String> {
        self.check_with_extras(inputs, outputs, &Extras::NONE)
    }

    /// [`Contract::check`], also accepting float ports whose names start with one of `extras`' prefixes.
    pub fn check_with_extras(&self, inputs: &[Outlet], outputs: &[Outlet], extras: &Extras) -> Result<Binding, String> {
        let bound_inputs = bind_side("input", self.inputs, inputs, || {
            format!("expected inputs {}; found {}", self.describe_inputs(), describe_outlets(inputs))
        })?;
        let extra_inputs = extra_ports("input", inputs, extras.inputs)?;
        let extra_outputs = extra_ports("output", outputs, extras.outputs)?;
        // Every input the model has must be one we know how to feed.
        for outlet in inputs {
            let known = bound_inputs.iter().flatten().any(|b| b.name == outlet.name())
                || extra_inputs.iter().any(|b| b.name == outlet.name());
            if !known {
                return Err(format!(
                    "input `{}` is not one latentcam can feed; expected inputs {}; found {}",
                    outlet.name(),
                    self.describe_inputs(),
                    describe_outlets(inputs)
                ));
            }
        }
        let bound_outputs = bind_side("output", self.outputs, outputs, || {
            format!("expected outputs {}; found {}", self.describe_outputs(), describe_outlets(outputs))
        })?;
        Ok(Binding { inputs: bound_inputs, outputs: bound_outputs, extra_inputs, extra_outputs })
    }
}

/// Name prefixes of ports a role has in varying number.
#[derive(Debug)]
pub struct Extras {
    pub inputs: &'static [&'static str],
    pub outputs: &'static [&'static str],
}

impl Extras {
    pub const NONE: Extras = Extras { inputs: &[], outputs: &[] };
}

fn extra_ports(side: &str, outlets: &[Outlet], prefixes: &[&str]) -> Result<Vec<Bound>, String> {
    let mut bound = Vec::new();
    for outlet in outlets.iter().filter(|o| prefixes.iter().any(|p| o.name().starts_with(p))) {
        match tensor_of(outlet) {
            Some((ty, shape, _)) if FLOAT.contains(&ty) => {
                bound.push(Bound { name: outlet.name().to_string(), ty, shape })
            }
            _ => return Err(format!("{side} `{}` is not a float tensor", outlet.name())),
        }
    }
    Ok(bound)
}

fn bind_side(
    side: &str,
    ports: &[Port],
    outlets: &[Outlet],
    context: impl Fn() -> String,
) -> Result<Vec<Option<Bound>>, String> {
    let mut bound = Vec::with_capacity(ports.len());
    for port in ports {
        let Some(outlet) = port.names.iter().find_map(|n| outlets.iter().find(|o| o.name() == *n)) else {
            if port.required {
                return Err(format!("missing {side} `{}`; {}", port.names.join("` or `"), context()));
            }
            bound.push(None);
            continue;
        };
        let Some((ty, shape, _)) = tensor_of(outlet) else {
            return Err(format!("{side} `{}` is not a tensor; {}", outlet.name(), context()));
        };
        if !port.types.contains(&ty) {
            return Err(format!(
                "{side} `{}` has element type {ty}, expected {}; {}",
                outlet.name(),
                port.types.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or "),
                context()
            ));
        }
        if !port.ranks.contains(&shape.len()) {
            return Err(format!(
                "{side} `{}` has rank {}, expected {}; {}",
                outlet.name(),
                shape.len(),
                port.ranks.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(" or "),
                context()
            ));
        }
        bound.push(Some(Bound { name: outlet.name().to_string(), ty, shape }));
    }
    Ok(bound)
}

use TensorElementType::{Float16, Float32, Int32, Int64};

/// Float ports take f32 or f16 (fp16 exports); latentcam reads which from the model.
const FLOAT: &[TensorElementType] = &[Float32, Float16];

/// Index constants for each role's ports, so call sites read `unet::SAMPLE` rather than `0`.
pub mod text_encoder {
    use super::*;
    pub const INPUT_IDS: usize = 0;
    pub const HIDDEN: usize = 0;
    pub static CONTRACT: Contract = Contract {
        inputs: &[Port { names: &["input_ids"], types: &[Int32, Int64], ranks: &[2], required: true }],
        outputs: &[Port { names: &["last_hidden_state"], types: FLOAT, ranks: &[3], required: true }],
    };
    /// Further outputs an encoder may have (all hidden states, the pooled output): SDXL takes some by name.
    pub static EXTRAS: Extras =
        Extras { inputs: &[], outputs: &["hidden_states.", "pooler_output", "text_embeds", "pooled_output"] };
}

pub mod unet {
    use super::*;
    pub const SAMPLE: usize = 0;
    pub const TIMESTEP: usize = 1;
    pub const CONTEXT: usize = 2;
    pub const TIMESTEP_COND: usize = 3;
    /// SDXL: the pooled prompt embedding, and the size conditions `[H, W, 0, 0, H, W]`.
    pub const TEXT_EMBEDS: usize = 4;
    pub const TIME_IDS: usize = 5;
    pub const OUT: usize = 0;
    pub static CONTRACT: Contract = Contract {
        inputs: &[
            Port { names: &["sample"], types: FLOAT, ranks: &[4], required: true },
            // float32 [B] (diffusers' scripts), float32 scalar, int64 [B] (optimum), or float16 (fp16 exports)
            Port { names: &["timestep"], types: &[Float32, Float16, Int64], ranks: &[0, 1], required: true },
            Port { names: &["encoder_hidden_states"], types: FLOAT, ranks: &[3], required: true },
            // Full LCM models (LCM-Dreamshaper): the guidance-scale embedding
            Port { names: &["timestep_cond"], types: FLOAT, ranks: &[2], required: false },
            // SDXL family (added_cond_kwargs): the second text encoder's pooled projection and the time ids
            Port { names: &["text_embeds"], types: FLOAT, ranks: &[2], required: false },
            Port { names: &["time_ids"], types: FLOAT, ranks: &[2], required: false },
        ],
        outputs: &[Port { names: &["out_sample"], types: FLOAT, ranks: &[4], required: true }],
    };
}

/// The UNet that takes ControlNet residuals: the UNet's ports plus `down_block_additional_residuals_N` and
/// `mid_block_additional_residual`.
pub mod unet_controlnet {
    use super::*;
    pub static EXTRAS: Extras =
        Extras { inputs: &["down_block_additional_residuals_", "mid_block_additional_residual"], outputs: &[] };
}

/// An OpenPose ControlNet: the UNet's inputs plus the conditioning image (RGB 0..1) and, when exported with it,
/// the conditioning scale; the residuals out.
pub mod controlnet {
    use super::*;
    pub const SAMPLE: usize = 0;
    pub const TIMESTEP: usize = 1;
    pub const CONTEXT: usize = 2;
    pub const COND: usize = 3;
    pub const SCALE: usize = 4;
    pub const TIMESTEP_COND: usize = 5;
    /// SDXL ControlNets take the UNet's added conditions too.
    pub const TEXT_EMBEDS: usize = 6;
    pub const TIME_IDS: usize = 7;
    pub static CONTRACT: Contract = Contract {
        inputs: &[
            Port { names: &["sample"], types: FLOAT, ranks: &[4], required: true },
            Port { names: &["timestep"], types: &[Float32, Float16, Int64], ranks: &[0, 1], required: true },
            Port { names: &["encoder_hidden_states"], types: FLOAT, ranks: &[3], required: true },
            Port { names: &["controlnet_cond"], types: FLOAT, ranks: &[4], required: true },
            Port { names: &["conditioning_scale"], types: FLOAT, ranks: &[0, 1], required: false },
            Port { names: &["timestep_cond"], types: FLOAT, ranks: &[2], required: false },
            Port { names: &["text_embeds"], types: FLOAT, ranks: &[2], required: false },
            Port { names: &["time_ids"], types: FLOAT, ranks: &[2], required: false },
        ],
        outputs: &[],
    };
    pub static EXTRAS: Extras = Extras { inputs: &[], outputs: &["down_block_res_samples_", "mid_block_res_sample"] };
}

pub mod vae_encoder {
    use super::*;
    pub const IMAGE: usize = 0;
    pub const LATENT: usize = 0;
    pub static CONTRACT: Contract = Contract {
        inputs: &[Port { names: &["sample", "image"], types: FLOAT, ranks: &[4], required: true }],
        // latent_sample: C channels; latent_parameters: mean and log-variance, 2C channels; latent: taesd's name
        outputs: &[Port {
            names: &["latent_sample", "latent_parameters", "latent"],
            types: FLOAT,
            ranks: &[4],
            required: true,
        }],
    };
}

pub mod vae_decoder {
    use super::*;
    pub const LATENT: usize = 0;
    pub const IMAGE: usize = 0;
    pub static CONTRACT: Contract = Contract {
        inputs: &[Port { names: &["latent_sample", "latent"], types: FLOAT, ranks: &[4], required: true }],
        outputs: &[Port { names: &["sample", "image"], types: FLOAT, ranks: &[4], required: true }],
    };
}
