#!/usr/bin/env python3
"""Pose model folders for latentcam's DWPose estimator (src/pose/dwpose.rs): a `pose.toml` manifest beside a YOLOX
person detector and an RTMPose whole-body model (DWPose), both ONNX.

Modes:

  fetch OUT_DIR     downloads the real DWPose ONNX files from the Hugging Face hub (needs internet), repository
                    yzd-v/DWPose: yolox_l.onnx (the detector, ~217 MB) and dw-ll_ucoco_384.onnx (the pose model,
                    ~134 MB), writes OUT_DIR/pose.toml and checks both files' inputs and outputs with onnxruntime.
  tiny [OUT_DIR]    builds tiny RANDOM-weight stand-ins with exactly the real I/O names, element types and shapes
                    (default OUT_DIR: models/tiny-dwpose, committed for the tests). No download.

The real models' I/O (what latentcam checks at load; the originals: DWPose's ControlNet annotator
`annotator/dwpose/onnxdet.py` + `onnxpose.py`, which read the input sizes from the sessions):

  yolox_l.onnx          images f32 [1,3,640,640] (RGB as the annotator feeds it, 0..255, no normalisation, letterboxed
                        top-left on 114 grey) -> output f32 [1,8400,85]: per anchor of the stride 8/16/32 grids
                        (80x80 + 40x40 + 20x20, row-major) the raw box (dx, dy, log w, log h: centre = (d + grid) *
                        stride, size = exp(.) * stride), objectness and 80 COCO class scores, both after a sigmoid.
                        (Megvii's YOLOX tools/export_onnx.py: input `images`, output `output`, static shapes.)
  dw-ll_ucoco_384.onnx  input f32 [1,3,384,288] (the person crop, RGB normalised by mean 123.675/116.28/103.53 and
                        std 58.395/57.12/57.375) -> simcc_x f32 [1,133,576], simcc_y f32 [1,133,768]: SimCC
                        responses per COCO-WholeBody keypoint over 2x-subdivided x and y bins (split ratio 2.0).
                        (mmdeploy's SimCC export config: input `input`, outputs `simcc_x`, `simcc_y`.)

The tiny stand-ins (onnx.helper graphs, seeded numpy weights, ~0.5 MB together):

  detector   per stride, an average pool of the image to the grid and a random 1x1 conv to the 85 channels (raw box,
             then sigmoid on objectness and classes), all levels concatenated like YOLOX's head. So that the tests see
             real detections, the stride-32 objectness carries a fixed bump at two grid cells (two "people", 192 px
             apart in the 640 input: cells (7, 10) and (13, 9)), peaking at logit ~3 (score ~0.9 after the class-0
             sigmoid) and falling to ~0.2 at the 4-neighbours (NMS candidates above 0.1 that the 0.45 IoU suppresses)
             and below 0.1 further out; the stride-8/16 levels never fire. The image moves every logit by about +-0.5
             through the random weights, so detections still depend on the frame. Boxes come out ~160 x 350 px.
  pose       a strided conv + ReLU, an average pool to 6x6, a random linear layer to (mu_x, mu_y, amp) per
             keypoint; simcc_x / simcc_y are amp * exp(-(bin - mu)^2 / 8) over the bins (a peak of width ~2 bins
             at a position that depends on the crop), amp = sigmoid(.) in 0..1: some keypoints above the 0.3
             threshold, some below.

Run: .venv-scripts/bin/python scripts/export_pose.py tiny   (scripts/pyenv.sh makes the venv)
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))

HUB_REPO = "yzd-v/DWPose"
DETECTOR = "yolox_l.onnx"
POSE = "dw-ll_ucoco_384.onnx"

DET_SIZE = 640
STRIDES = (8, 16, 32)
NUM_CLASSES = 80
POSE_W, POSE_H = 288, 384
KEYPOINTS = 133
SPLIT_RATIO = 2
OPSET = 17

# The two "people" of the tiny detector: stride-32 grid cells (x, y).
TINY_PEOPLE = ((7, 10), (13, 9))


def manifest(detector, pose, comment):
    return (f"# {comment}\n"
            "kind = \"dwpose\"\n"
            f"detector = \"{detector}\"\n"
            f"pose = \"{pose}\"\n")


def expected_io():
    """(inputs, outputs) as {name: (dtype, shape)} for each model: what latentcam checks."""
    anchors = sum((DET_SIZE // s) ** 2 for s in STRIDES)
    det = ({"images": ("tensor(float)", [1, 3, DET_SIZE, DET_SIZE])},
           {"output": ("tensor(float)", [1, anchors, 5 + NUM_CLASSES])})
    pose = ({"input": ("tensor(float)", [1, 3, POSE_H, POSE_W])},
            {"simcc_x": ("tensor(float)", [1, KEYPOINTS, POSE_W * SPLIT_RATIO]),
             "simcc_y": ("tensor(float)", [1, KEYPOINTS, POSE_H * SPLIT_RATIO])})
    return det, pose


def check_io(path, expected, strict_batch):
    """Print a model's I/O and check it against `expected` (a dynamic batch passes unless `strict_batch`)."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    found = ({i.name: (i.type, list(i.shape)) for i in session.get_inputs()},
             {o.name: (o.type, list(o.shape)) for o in session.get_outputs()})
    print(f"{os.path.basename(path)}: inputs {found[0]}, outputs {found[1]}")
    for side, want, have in (("input", expected[0], found[0]), ("output", expected[1], found[1])):
        for name, (ty, shape) in want.items():
            assert name in have, f"{path}: no {side} `{name}` (found {list(have)})"
            hty, hshape = have[name]
            assert hty == ty, f"{path}: {side} `{name}` is {hty}, expected {ty}"
            dims = [d if isinstance(d, int) else -1 for d in hshape]
            ok = len(dims) == len(shape) and all(
                h == w or (i == 0 and h == -1 and not strict_batch) for i, (h, w) in enumerate(zip(dims, shape)))
            assert ok, f"{path}: {side} `{name}` has shape {hshape}, expected {shape}"


# ---------------------------------------------------------------------------------------------------- fetch


def fetch(out_dir):
    from huggingface_hub import hf_hub_download
    os.makedirs(out_dir, exist_ok=True)
    for name in (DETECTOR, POSE):
        path = hf_hub_download(repo_id=HUB_REPO, filename=name, local_dir=out_dir)
        print(f"downloaded {name} -> {path}")
    det_io, pose_io = expected_io()
    check_io(os.path.join(out_dir, DETECTOR), det_io, strict_batch=False)
    check_io(os.path.join(out_dir, POSE), pose_io, strict_batch=False)
    with open(os.path.join(out_dir, "pose.toml"), "w") as f:
        f.write(manifest(DETECTOR, POSE, f"DWPose from the Hugging Face hub ({HUB_REPO}), scripts/export_pose.py fetch"))
    print(f"wrote {os.path.join(out_dir, 'pose.toml')}; use it with [pose] model = \"{out_dir}\"")


# ---------------------------------------------------------------------------------------------------- tiny


def tiny_detector(rng):
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = [], []

    def const(name, array, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    channels = 5 + NUM_CLASSES
    levels = []
    for s in STRIDES:
        side = DET_SIZE // s
        # Random 1x1 conv on (pool - 114): the image moves each logit by about +-0.5.
        scale = np.full((channels, 1), 0.004, np.float32)
        scale[0:4] = 0.001  # the box moves less
        w = (rng.standard_normal((channels, 3)) * scale).astype(np.float32)
        b = np.zeros(channels, np.float32)
        b[4] = -12.0  # objectness: nothing at strides 8 and 16
        b[5] = 3.0  # class 0 (person)
        b[6:] = -3.0
        if s == 32:
            b[0:4] = [0.5, 0.5, np.log(5.0), np.log(11.0)]
            b[4] = -5.0
        b -= 114.0 * w.sum(axis=1)
        pooled, conv = f"pool{s}", f"conv{s}"
        nodes.append(helper.make_node("AveragePool", ["images"], [pooled], kernel_shape=[s, s], strides=[s, s]))
        nodes.append(helper.make_node("Conv", [pooled, const(f"w{s}", w[:, :, None, None]), const(f"b{s}", b)],
                                      [conv]))
        if s == 32:
            ys, xs = np.mgrid[0:side, 0:side]
            bump = np.zeros((side, side), np.float32)
            for cx, cy in TINY_PEOPLE:
                bump = np.maximum(bump, 8.0 * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 1.28))
            onehot = np.zeros((1, channels, 1, 1), np.float32)
            onehot[0, 4] = 1.0
            nodes.append(helper.make_node("Mul", [const("obj_onehot", onehot), const("bump", bump[None, None])],
                                          ["bump_map"]))
            nodes.append(helper.make_node("Add", [conv, "bump_map"], [f"{conv}_b"]))
            conv = f"{conv}_b"
        flat = f"flat{s}"
        nodes.append(helper.make_node("Reshape", [conv, const(f"shape{s}", [1, channels, side * side], np.int64)], [flat]))
        levels.append(flat)
    const("shape_split", [4, channels - 4], np.int64)
    nodes += [
        helper.make_node("Concat", levels, ["raw"], axis=2),
        helper.make_node("Split", ["raw", "shape_split"], ["box", "logits"], axis=1),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
        helper.make_node("Concat", ["box", "scores"], ["head"], axis=1),
        helper.make_node("Transpose", ["head"], ["output"], perm=[0, 2, 1]),
    ]
    anchors = sum((DET_SIZE // s) ** 2 for s in STRIDES)
    graph = helper.make_graph(
        nodes, "tiny_yolox",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, DET_SIZE, DET_SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, anchors, channels])], inits)
    return graph


def tiny_pose(rng):
    from onnx import TensorProto, helper, numpy_helper
    inits = []

    def const(name, array, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    c1 = 8
    w1 = (rng.standard_normal((c1, 3, 4, 4)) * 0.15).astype(np.float32)
    b1 = (rng.standard_normal(c1) * 0.1).astype(np.float32)
    pooled = c1 * 6 * 6
    wg = (rng.standard_normal((pooled, KEYPOINTS * 3)) * 0.25).astype(np.float32)
    bg = np.zeros((KEYPOINTS, 3), np.float32)
    bg[:, 2] = -0.5  # amplitude logits centred a little below 0: about half the keypoints above 0.3
    bg = bg.reshape(-1)
    wx, wy = POSE_W * SPLIT_RATIO, POSE_H * SPLIT_RATIO
    nodes = [
        helper.make_node("Conv", ["input", const("w1", w1), const("b1", b1)], ["c1"], strides=[4, 4]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("AveragePool", ["r1"], ["p1"], kernel_shape=[16, 12], strides=[16, 12]),
        helper.make_node("Flatten", ["p1"], ["f1"], axis=1),
        helper.make_node("Gemm", ["f1", const("wg", wg), const("bg", bg)], ["z"]),
        helper.make_node("Reshape", ["z", const("kshape", [1, KEYPOINTS, 3], np.int64)], ["zk"]),
        helper.make_node("Split", ["zk", const("split3", [1, 1, 1], np.int64)], ["zx", "zy", "za"], axis=2),
        helper.make_node("Sigmoid", ["zx"], ["sx"]),
        helper.make_node("Sigmoid", ["zy"], ["sy"]),
        helper.make_node("Sigmoid", ["za"], ["amp"]),
        helper.make_node("Mul", ["sx", const("wx1", [wx - 1.0])], ["mux"]),
        helper.make_node("Mul", ["sy", const("wy1", [wy - 1.0])], ["muy"]),
    ]
    for axis, mu, bins, out in (("x", "mux", wx, "simcc_x"), ("y", "muy", wy, "simcc_y")):
        nodes += [
            helper.make_node("Sub", [const(f"bins_{axis}", np.arange(bins, dtype=np.float32)[None, None]), mu],
                             [f"d{axis}"]),
            helper.make_node("Mul", [f"d{axis}", f"d{axis}"], [f"d2{axis}"]),
            helper.make_node("Mul", [f"d2{axis}", const(f"inv{axis}", [-1.0 / 8.0])], [f"e{axis}"]),
            helper.make_node("Exp", [f"e{axis}"], [f"g{axis}"]),
            helper.make_node("Mul", [f"g{axis}", "amp"], [out]),
        ]
    graph = helper.make_graph(
        nodes, "tiny_rtmpose",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, POSE_H, POSE_W])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, KEYPOINTS, wx]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, KEYPOINTS, wy])], inits)
    return graph


def tiny(out_dir):
    import onnx
    from onnx import helper
    rng = np.random.default_rng(20261130)
    os.makedirs(out_dir, exist_ok=True)
    for name, graph in ((DETECTOR, tiny_detector(rng)), (POSE, tiny_pose(rng))):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="latentcam scripts/export_pose.py tiny")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        path = os.path.join(out_dir, name)
        onnx.save(model, path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    det_io, pose_io = expected_io()
    check_io(os.path.join(out_dir, DETECTOR), det_io, strict_batch=True)
    check_io(os.path.join(out_dir, POSE), pose_io, strict_batch=True)
    with open(os.path.join(out_dir, "pose.toml"), "w") as f:
        f.write(manifest(DETECTOR, POSE, "Tiny RANDOM-weight DWPose stand-ins (real I/O), scripts/export_pose.py tiny"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fetch", help="download the real DWPose ONNX files (internet)")
    f.add_argument("out_dir")
    t = sub.add_parser("tiny", help="build the tiny random-weight stand-ins (no download)")
    t.add_argument("out_dir", nargs="?", default=os.path.join(ROOT, "models", "tiny-dwpose"))
    args = ap.parse_args()
    if args.mode == "fetch":
        fetch(args.out_dir)
    else:
        tiny(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
