//! The inputs and outputs an ONNX file declares (names and dimensions), read from the file itself without ONNX
//! Runtime: the one ONNX protobuf reader of the crate.
//!
//! TensorRT needs a min/opt/max shape for every input with a dynamic dimension before its session exists
//! ([`super::tensorrt`]), and a pose model folder is recognised by its models' port names
//! ([`crate::pose::manifest`]), both before any session exists. This reads just enough of the protobuf:
//! `ModelProto.graph` (field 7), in it every `GraphProto.input` (field 11) and `.output` (12), and of each its
//! name and tensor shape. Everything else (nodes, initializers with their weights) is skipped by length, so a
//! 1.7 GB single-file UNet costs a few thousand small reads and seeks, not a pass over its weights.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

/// One graph input as the file declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredInput {
    pub name: String,
    /// Dimensions, -1 where the model leaves one dynamic (a `dim_param` or no value); `None` when the file gives
    /// no shape at all (rank unknown) or the input is not a tensor.
    pub dims: Option<Vec<i64>>,
}

impl DeclaredInput {
    /// Whether TensorRT needs a profile for this input: a dimension is dynamic, or the rank is unknown.
    pub fn is_dynamic(&self) -> bool {
        self.dims.as_ref().is_none_or(|d| d.iter().any(|&v| v < 0))
    }
}

/// A graph's declared ports, in the file's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphPorts {
    pub inputs: Vec<DeclaredInput>,
    pub outputs: Vec<DeclaredInput>,
}

/// The graph inputs of the ONNX file at `path`, in the file's order. Initializers that old exporters (IR < 4)
/// also list as inputs are included; they have static shapes.
pub fn graph_inputs(path: &Path) -> io::Result<Vec<DeclaredInput>> {
    graph_ports(path).map(|p| p.inputs)
}

/// The graph inputs and outputs of the ONNX file at `path`.
pub fn graph_ports(path: &Path) -> io::Result<GraphPorts> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut proto = Proto::new(BufReader::with_capacity(64 << 10, file));
    while proto.pos < len {
        let (field, wire) = proto.tag()?;
        if field == MODEL_GRAPH && wire == LEN {
            let end = proto.end_of_len(len)?;
            return graph(&mut proto, end);
        }
        proto.skip(wire)?;
    }
    Err(invalid("no graph in the file"))
}

/// `ModelProto.graph`.
const MODEL_GRAPH: u64 = 7;
/// `GraphProto.input`, `.output`.
const GRAPH_INPUT: u64 = 11;
const GRAPH_OUTPUT: u64 = 12;
/// Wire types.
const VARINT: u8 = 0;
const LEN: u8 = 2;
/// A `ValueInfoProto` larger than this is not one (names and shapes take bytes, not megabytes).
const MAX_VALUE_INFO: u64 = 1 << 20;

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("not a readable ONNX model: {}", what.into()))
}

fn graph<R: BufRead + Seek>(proto: &mut Proto<R>, end: u64) -> io::Result<GraphPorts> {
    let mut ports = GraphPorts::default();
    while proto.pos < end {
        let (field, wire) = proto.tag()?;
        match (field, wire) {
            (GRAPH_INPUT, LEN) => ports.inputs.push(value_info(&proto.message(MAX_VALUE_INFO)?)?),
            (GRAPH_OUTPUT, LEN) => ports.outputs.push(value_info(&proto.message(MAX_VALUE_INFO)?)?),
            _ => proto.skip(wire)?,
        }
    }
    if proto.pos != end {
        return Err(invalid("the graph's last field runs past its end"));
    }
    Ok(ports)
}

/// `ValueInfoProto`: 1 name, 2 type.
fn value_info(data: &[u8]) -> io::Result<DeclaredInput> {
    let mut name = None;
    let mut dims = None;
    each_field(data, |field, wire, p| {
        match (field, wire) {
            (1, LEN) => name = Some(p.string()?),
            (2, LEN) => dims = type_proto(&p.message(MAX_VALUE_INFO)?)?,
            _ => p.skip(wire)?,
        }
        Ok(())
    })?;
    Ok(DeclaredInput { name: name.ok_or_else(|| invalid("a graph port without a name"))?, dims })
}

/// `TypeProto`: 1 tensor_type (`TypeProto.Tensor`: 1 elem_type, 2 shape). Other kinds (sequences, maps) and a
/// tensor without a shape give `None`.
fn type_proto(data: &[u8]) -> io::Result<Option<Vec<i64>>> {
    let mut tensor = None;
    each_field(data, |field, wire, p| {
        match (field, wire) {
            (1, LEN) => tensor = Some(p.message(MAX_VALUE_INFO)?),
            _ => p.skip(wire)?,
        }
        Ok(())
    })?;
    let Some(tensor) = tensor else { return Ok(None) };
    let mut dims = None;
    each_field(&tensor, |field, wire, p| {
        match (field, wire) {
            (2, LEN) => dims = Some(shape(&p.message(MAX_VALUE_INFO)?)?),
            _ => p.skip(wire)?,
        }
        Ok(())
    })?;
    Ok(dims)
}

/// `TensorShapeProto`: repeated 1 dim (`Dimension`: 1 dim_value, 2 dim_param, 3 denotation).
fn shape(data: &[u8]) -> io::Result<Vec<i64>> {
    let mut dims = Vec::new();
    each_field(data, |field, wire, p| {
        match (field, wire) {
            (1, LEN) => {
                let mut value = -1;
                each_field(&p.message(MAX_VALUE_INFO)?, |field, wire, d| {
                    match (field, wire) {
                        // int64, two's complement; a negative value is no size.
                        (1, VARINT) => value = (d.varint()? as i64).max(-1),
                        // dim_param: a named dynamic dimension
                        (2, LEN) => {
                            d.skip(LEN)?;
                            value = -1;
                        }
                        _ => d.skip(wire)?,
                    }
                    Ok(())
                })?;
                dims.push(value);
            }
            _ => p.skip(wire)?,
        }
        Ok(())
    })?;
    Ok(dims)
}

/// Call `f(field, wire type, reader)` for every field of the message `data`; `f` must consume the value.
fn each_field(data: &[u8], mut f: impl FnMut(u64, u8, &mut Proto<Cursor<&[u8]>>) -> io::Result<()>) -> io::Result<()> {
    let end = data.len() as u64;
    let mut p = Proto::new(Cursor::new(data));
    while p.pos < end {
        let (field, wire) = p.tag()?;
        f(field, wire, &mut p)?;
    }
    if p.pos != end {
        return Err(invalid("a field runs past the end of its message"));
    }
    Ok(())
}

/// A protobuf reader that knows its position.
struct Proto<R> {
    r: R,
    pos: u64,
}

impl<R: BufRead + Seek> Proto<R> {
    fn new(r: R) -> Proto<R> {
        Proto { r, pos: 0 }
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8];
        self.r.read_exact(&mut b)?;
        self.pos += 1;
        Ok(b[0])
    }

    fn varint(&mut self) -> io::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(invalid("a varint longer than 10 bytes"))
    }

    fn tag(&mut self) -> io::Result<(u64, u8)> {
        let tag = self.varint()?;
        Ok((tag >> 3, (tag & 7) as u8))
    }

    /// Read a length prefix and return where the value ends (at most `limit`).
    fn end_of_len(&mut self, limit: u64) -> io::Result<u64> {
        let n = self.varint()?;
        self.pos.checked_add(n).filter(|&end| end <= limit).ok_or_else(|| invalid("a field runs past the end"))
    }

    /// A length-prefixed value of at most `max` bytes.
    fn message(&mut self, max: u64) -> io::Result<Vec<u8>> {
        let n = self.varint()?;
        if n > max {
            return Err(invalid(format!("a {n}-byte field where at most {max} were expected")));
        }
        let mut bytes = vec![0u8; n as usize];
        self.r.read_exact(&mut bytes)?;
        self.pos += n;
        Ok(bytes)
    }

    fn string(&mut self) -> io::Result<String> {
        String::from_utf8(self.message(MAX_VALUE_INFO)?).map_err(|_| invalid("a name that is not UTF-8"))
    }

    /// Skip a value of wire type `wire`.
    fn skip(&mut self, wire: u8) -> io::Result<()> {
        match wire {
            VARINT => self.varint().map(drop),
            1 => self.advance(8),
            LEN => {
                let n = self.varint()?;
                self.advance(n)
            }
            5 => self.advance(4),
            other => Err(invalid(format!("wire type {other}"))),
        }
    }

    /// Move `n` bytes on: small skips are read through the buffer, large ones (weights) are a seek.
    fn advance(&mut self, n: u64) -> io::Result<()> {
        if n <= 16 << 10 {
            let copied = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
            if copied != n {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
        } else {
            let offset = i64::try_from(n).map_err(|_| invalid("a field longer than a file can be"))?;
            self.r.seek(SeekFrom::Current(offset))?;
        }
        self.pos += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protobuf encoding helpers for hand-made models.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn field_len(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    fn field_varint(field: u64, v: u64, out: &mut Vec<u8>) {
        varint(field << 3, out);
        varint(v, out);
    }

    /// A `ValueInfoProto` with a float tensor of `dims` (`None`: a `dim_param` named "n"; `Some(-2)`: no value).
    fn input(name: &str, dims: Option<&[Option<i64>]>) -> Vec<u8> {
        let mut tensor = Vec::new();
        field_varint(1, 1, &mut tensor);
        if let Some(dims) = dims {
            let mut shape = Vec::new();
            for d in dims {
                let mut dim = Vec::new();
                match d {
                    Some(-2) => {}
                    Some(v) => field_varint(1, *v as u64, &mut dim),
                    None => field_len(2, b"n", &mut dim),
                }
                field_len(1, &dim, &mut shape);
            }
            field_len(2, &shape, &mut tensor);
        }
        let mut ty = Vec::new();
        field_len(1, &tensor, &mut ty);
        let mut info = Vec::new();
        field_len(1, name.as_bytes(), &mut info);
        field_len(2, &ty, &mut info);
        info
    }

    fn model(graph: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        field_varint(1, 8, &mut m); // ir_version
        field_len(2, b"test", &mut m); // producer_name
        field_len(7, graph, &mut m);
        field_varint(5, 1, &mut m); // model_version, after the graph
        m
    }

    #[test]
    fn reads_names_and_dims_and_skips_the_rest() {
        let mut graph = Vec::new();
        field_len(1, &[0x0a, 0x01, b'x'], &mut graph); // a node
        field_len(5, &vec![0u8; 100_000], &mut graph); // an initializer, skipped by a seek
        field_len(11, &input("sample", Some(&[None, Some(4), None, Some(-2)])), &mut graph);
        field_len(11, &input("timestep", Some(&[])), &mut graph);
        field_len(11, &input("unknown_rank", None), &mut graph);
        field_len(12, &input("out_sample", Some(&[Some(1)])), &mut graph); // an output: not an input
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, model(&graph)).unwrap();

        let inputs = graph_inputs(&path).unwrap();
        assert_eq!(
            inputs,
            vec![
                DeclaredInput { name: "sample".into(), dims: Some(vec![-1, 4, -1, -1]) },
                DeclaredInput { name: "timestep".into(), dims: Some(vec![]) },
                DeclaredInput { name: "unknown_rank".into(), dims: None },
            ]
        );
        assert!(inputs[0].is_dynamic() && !inputs[1].is_dynamic() && inputs[2].is_dynamic());
    }

    #[test]
    fn truncated_and_foreign_files_are_errors_not_panics() {
        let mut graph = Vec::new();
        field_len(11, &input("sample", Some(&[Some(1), Some(4)])), &mut graph);
        let whole = model(&graph);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        // Every cut before the graph's end (the last field, model_version, takes 2 bytes).
        for cut in 0..whole.len() - 2 {
            std::fs::write(&path, &whole[..cut]).unwrap();
            assert!(graph_inputs(&path).is_err(), "cut at {cut}");
        }
        std::fs::write(&path, &whole[..whole.len() - 2]).unwrap();
        assert_eq!(graph_inputs(&path).unwrap().len(), 1);
        std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").unwrap();
        assert!(graph_inputs(&path).is_err());
        std::fs::write(&path, b"").unwrap();
        assert!(graph_inputs(&path).is_err());
    }
}
