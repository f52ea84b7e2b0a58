//! Small ONNX graphs latentcam builds at load time with ONNX Runtime's Model Editor API (`ort::editor`).
//!
//! The maths around the models (8-bit pixels to the VAE's range, the noise add, the LCM step, back to 8-bit
//! pixels) runs as graphs on the same execution provider as the models, so on a GPU the frame never leaves the
//! device between the camera image going in and the picture coming out. Shapes are static (the working size and
//! batch are fixed when the frame path is built), which is also what CUDA graphs need.

use ort::editor::{Graph, Model as EditorModel, Node, ONNX_DOMAIN, Opset};
use ort::operator::Attribute;
use ort::value::{Outlet, Shape, SymbolicDimensions, TensorElementType, ValueType};

use crate::error::{Error, Result};

/// Opset for every built graph (Slice, Clip, Cast as today's ONNX defines them).
const OPSET: u32 = 17;

/// Builds one graph. Values are named by the builder (`v0`, `v1`, ...); inputs and outputs by the caller.
pub struct GraphBuilder {
    name: &'static str,
    graph: Graph,
    next: usize,
    inputs: Vec<Outlet>,
    outputs: Vec<Outlet>,
}

/// The ONNX `TensorProto.DataType` number of `ty` (the `to` attribute of Cast).
fn onnx_type(ty: TensorElementType) -> i64 {
    match ty {
        TensorElementType::Float32 => 1,
        TensorElementType::Uint8 => 2,
        TensorElementType::Int64 => 7,
        TensorElementType::Float16 => 10,
        TensorElementType::Int32 => 6,
        _ => 0,
    }
}

fn tensor_type(ty: TensorElementType, shape: &[i64]) -> ValueType {
    ValueType::Tensor {
        ty,
        shape: Shape::new(shape.iter().copied()),
        dimension_symbols: SymbolicDimensions::empty(shape.len()),
    }
}

impl GraphBuilder {
    pub fn new(name: &'static str) -> Result<GraphBuilder> {
        let graph = Graph::new().map_err(|e| Error::internal("graph builder", e))?;
        Ok(GraphBuilder { name, graph, next: 0, inputs: Vec::new(), outputs: Vec::new() })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn err(&self, e: ort::Error) -> Error {
        Error::internal("graph builder", format!("the {} graph: {e}", self.name))
    }

    /// Declare a graph input; returns its name for use in nodes.
    pub fn input(&mut self, name: &str, ty: TensorElementType, shape: &[i64]) -> String {
        self.inputs.push(Outlet::new(name, tensor_type(ty, shape)));
        name.to_string()
    }

    /// Add a node `op(inputs)` with one output; returns the output's name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attributes: Vec<Attribute>) -> Result<String> {
        let out = format!("v{}", self.next);
        self.next += 1;
        let node = Node::new(op, ONNX_DOMAIN, format!("{op}_{out}"), inputs, [out.as_str()], attributes)
            .map_err(|e| self.err(e))?;
        self.graph.add_node(node).map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// A float scalar constant (broadcasts against any tensor).
    pub fn scalar(&mut self, value: f32) -> Result<String> {
        let attribute = Attribute::new("value_float", value).map_err(|e| self.err(e))?;
        self.op("Constant", &[], vec![attribute])
    }

    /// A 1-D int64 constant (Slice's starts/ends/axes, Reshape's shape).
    pub fn ints(&mut self, values: &[i64]) -> Result<String> {
        let attribute = Attribute::new("value_ints", values.to_vec()).map_err(|e| self.err(e))?;
        self.op("Constant", &[], vec![attribute])
    }

    /// `x` cast to `to`, or `x` itself when `from == to`.
    pub fn cast(&mut self, x: &str, from: TensorElementType, to: TensorElementType) -> Result<String> {
        if from == to {
            return Ok(x.to_string());
        }
        let attribute = Attribute::new("to", onnx_type(to)).map_err(|e| self.err(e))?;
        self.op("Cast", &[x], vec![attribute])
    }

    /// `x[start..end]` along `axis`.
    pub fn slice(&mut self, x: &str, axis: i64, start: i64, end: i64) -> Result<String> {
        let (starts, ends, axes) = (self.ints(&[start])?, self.ints(&[end])?, self.ints(&[axis])?);
        self.op("Slice", &[x, &starts, &ends, &axes], vec![])
    }

    /// Every `step`-th element from the first along each of `axes` (nearest downsampling by `step`).
    pub fn slice_strided(&mut self, x: &str, axes: &[i64], step: i64) -> Result<String> {
        let starts = self.ints(&vec![0; axes.len()])?;
        let ends = self.ints(&vec![i64::MAX; axes.len()])?;
        let axes_c = self.ints(axes)?;
        let steps = self.ints(&vec![step; axes.len()])?;
        self.op("Slice", &[x, &starts, &ends, &axes_c, &steps], vec![])
    }

    /// A boolean tensor as float32 0/1.
    pub fn cast_bool(&mut self, x: &str) -> Result<String> {
        let attribute = Attribute::new("to", onnx_type(TensorElementType::Float32)).map_err(|e| self.err(e))?;
        self.op("Cast", &[x], vec![attribute])
    }

    pub fn binary(&mut self, op: &str, a: &str, b: &str) -> Result<String> {
        self.op(op, &[a, b], vec![])
    }

    /// `a * x + b * y`, in that order of operations (as the host code and diffusers compute it).
    pub fn mix(&mut self, a: &str, x: &str, b: &str, y: &str) -> Result<String> {
        let ax = self.binary("Mul", a, x)?;
        let by = self.binary("Mul", b, y)?;
        self.binary("Add", &ax, &by)
    }

    /// Concatenate along `axis`.
    pub fn concat(&mut self, parts: &[&str], axis: i64) -> Result<String> {
        let attribute = Attribute::new("axis", axis).map_err(|e| self.err(e))?;
        self.op("Concat", parts, vec![attribute])
    }

    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> Result<String> {
        let attribute = Attribute::new("perm", perm.to_vec()).map_err(|e| self.err(e))?;
        self.op("Transpose", &[x], vec![attribute])
    }

    /// Declare `value` as graph output `name` (an Identity node gives it that name).
    pub fn output(&mut self, value: &str, name: &str, ty: TensorElementType, shape: &[i64]) -> Result<()> {
        let node =
            Node::new("Identity", ONNX_DOMAIN, format!("out_{name}"), [value], [name], []).map_err(|e| self.err(e))?;
        self.graph.add_node(node).map_err(|e| self.err(e))?;
        self.outputs.push(Outlet::new(name, tensor_type(ty, shape)));
        Ok(())
    }

    /// The finished model, ready for a session.
    pub fn finish(mut self) -> Result<EditorModel> {
        let inputs = std::mem::take(&mut self.inputs);
        let outputs = std::mem::take(&mut self.outputs);
        self.graph.set_inputs(inputs).map_err(|e| self.err(e))?;
        self.graph.set_outputs(outputs).map_err(|e| self.err(e))?;
        let opset = Opset::new(ONNX_DOMAIN, OPSET).map_err(|e| self.err(e))?;
        let mut model = EditorModel::new([opset]).map_err(|e| self.err(e))?;
        let name = self.name;
        model.set_graph(self.graph).map_err(|e| Error::internal("graph builder", format!("the {name} graph: {e}")))?;
        Ok(model)
    }
}
