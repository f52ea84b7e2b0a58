#!/usr/bin/env python3
"""Golden files for the MoveNet pose estimator: tests/golden/movenet/*, from onnxruntime (Python) itself.

The reference does what src/pose/movenet.rs does, step by step:
  letterbox   the frame scaled to fit the model's S x S input keeping its aspect: scale s = min(S/w, S/h),
              resized size nw = floor(w*s + 0.5), nh = floor(h*s + 0.5) (at least 1), placed at
              ox = (S - nw) // 2, oy = (S - nh) // 2 on zero (black) padding. The resize is latentcam's
              (fast_image_resize 6.1, Convolution(Bilinear), U8x3), reproduced here bit for bit: a triangle filter
              whose support widens when downscaling (Pillow's BILINEAR), with the coefficients rounded to i16 at
              an adaptive precision and the vertical pass done first (Pillow rounds to 22-bit i32 coefficients
              and goes horizontal first: it differs by one level on ~15% of the values, and this int8 model moves
              keypoints by up to ~10 px over that, so an exact reference is worth the 40 lines).
  model       uint8 [1,S,S,3] RGB in -> f32 [1,1,17,3] = (y, x, score), y and x normalised to the S x S input.
  mapping     back to frame pixels: x = (x_n*S - ox) * w/nw, y = (y_n*S - oy) * h/nh (continuous coordinates,
              0 = the frame's left/top edge), then COCO-17 -> OpenPose-18: neck = mean of the shoulders when both
              are confident (score = the smaller of the two), and any point whose score is below the threshold
              (0.3) gets score 0 and x = y = 0 (missing).

Cases: ../shared/media/astronaut.png (read from ../shared, 512 x 512), three frames of
../shared/media/chaplin_street_9s.mp4 (decoded with GStreamer, downscaled to 320 px wide with Pillow's LANCZOS and
written to tests/golden/movenet/ as PNGs: the Rust test reads those), and a portrait crop of one frame (odd size,
horizontal padding, upscaled). Each case stores the letterboxed model input (letterbox_<name>.png), the raw model
output and the expected OpenPose-18 keypoints in cases.json.

Run: .venv-scripts/bin/python scripts/golden/movenet.py   (scripts/pyenv.sh makes the venv)

The model's outputs depend on the CPU: this int8 model runs ONNX Runtime's u8s8 matrix products, which on CPUs
without VNNI (AVX2, AVX-512BW) sum byte products in saturating 16-bit pairs (vpmaddubsw) and on CPUs with VNNI
(avx512_vnni, avx_vnni) do not; raw outputs then differ by up to 0.48 and keypoints by ~12 px (measured on an AMD
EPYC with avx512_vnni against the cases.json made without it). cases.json holds the outputs of the CPU class it was
made on (its "int8_kernels"); `--outputs-only` recomputes the raw outputs and keypoints of the committed letterbox
inputs on this CPU and writes them to outputs_<class>.json, which the Rust test prefers on a CPU of that class.
"""
import json
import os
import subprocess
import tempfile

import numpy as np
import onnxruntime as ort
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
MODEL = os.path.join(SHARED, "models", "movenet", "movenet_lightning_int8.onnx")
ASTRONAUT = os.path.join(SHARED, "media", "astronaut.png")
VIDEO = os.path.join(SHARED, "media", "chaplin_street_9s.mp4")
OUT = os.path.join(ROOT, "tests", "golden", "movenet")

THRESHOLD = 0.3
FRAMES = [30, 120, 200]  # 0-based frame indices of the 25 fps video
FRAME_WIDTH = 320
PORTRAIT = (120, (101, 0, 218, 180))  # frame, crop box (left, top, right, bottom) in the 320 px frame: 117 x 180

# COCO-17 index for each OpenPose-18 point; None for the neck (derived from the shoulders).
COCO = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
        "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
        "right_ankle"]
OPENPOSE_FROM_COCO = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]


def geometry(w, h, size):
    s = min(size / w, size / h)
    nw = min(size, max(1, int(np.floor(w * s + 0.5))))
    nh = min(size, max(1, int(np.floor(h * s + 0.5))))
    return {"size": size, "resized": [nw, nh], "offset": [(size - nw) // 2, (size - nh) // 2]}


def rust_round(v):
    """Rust's f64::round: half away from zero (Python's round() is half to even)."""
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def fir_coefficients(in_size, out_size, adaptive=True):
    """fast_image_resize's precompute_coefficients (Bilinear) and Normalizer16: an out_size x in_size matrix of
    i16 weights, and their precision (bits). `adaptive`: the kernel widens when downscaling (Convolution, what
    MoveNet's letterbox uses); without it, Interpolation (DWPose's detector input)."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0) if adaptive else 1.0
    radius = 1.0 * filter_scale
    recip = 1.0 / filter_scale
    rows = []
    for out_x in range(out_size):
        in_center = (out_x + 0.5) * scale
        x_min = int(max(np.floor(in_center - radius), 0.0))
        x_max = int(min(np.ceil(in_center + radius), float(in_size)))
        center = in_center - 0.5
        weights, start = [], x_min
        for x in range(x_min, x_max):
            w = max(0.0, 1.0 - abs((x - center) * recip))
            if x == start and w == 0.0:
                start += 1
            else:
                weights.append(w)
        total = 0.0
        for w in weights:
            total += w
        if total != 0.0:
            weights = [w / total for w in weights]
        rows.append((start, weights))
    max_weight = max(max(w) if w else 0.0 for _, w in rows)
    precision = 0
    for p in range(22):
        precision = p
        if rust_round(max_weight * float(1 << (p + 1))) >= (1 << 15):
            break
    matrix = np.zeros((out_size, in_size), np.int64)
    for out_x, (start, weights) in enumerate(rows):
        for i, w in enumerate(weights):
            matrix[out_x, start + i] = int(rust_round(w * float(1 << precision)))
    return matrix, precision


def fir_pass(matrix, precision, values, axis):
    """One convolution pass along `axis` (0: rows, 1: columns) of an HxWx3 uint8 array, with fir's rounding."""
    acc = np.tensordot(matrix, values.astype(np.int64), axes=([1], [axis]))  # out x (other) x 3
    if axis == 1:
        acc = acc.transpose(1, 0, 2)
    acc = (acc + (1 << (precision - 1))) >> precision
    return np.clip(acc, 0, 255).astype(np.uint8)


def fir_resize(image, width, height):
    """fast_image_resize 6.1 Resizer::resize with ResizeAlg::Convolution(FilterType::Bilinear) on U8x3."""
    src = np.asarray(image, np.uint8)
    h, w = src.shape[:2]
    out = src
    if height != h:  # u8 images: the vertical pass first
        out = fir_pass(*fir_coefficients(h, height), out, 0)
    if width != w:
        out = fir_pass(*fir_coefficients(w, width), out, 1)
    return out


def letterbox(image, geo):
    size = geo["size"]
    nw, nh = geo["resized"]
    ox, oy = geo["offset"]
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[oy:oy + nh, ox:ox + nw] = fir_resize(image, nw, nh)
    # Sanity check of the transcription: within a level of Pillow's BILINEAR, the same filter.
    pil = np.asarray(image.resize((nw, nh), Image.BILINEAR), np.int16)
    assert np.abs(pil - canvas[oy:oy + nh, ox:ox + nw]).max() <= 1
    return canvas


def to_openpose(raw, w, h, geo):
    size = geo["size"]
    nw, nh = geo["resized"]
    ox, oy = geo["offset"]

    def point(i):
        y_n, x_n, score = (float(v) for v in raw[i])
        if score < THRESHOLD:
            return [0.0, 0.0, 0.0]
        return [(x_n * size - ox) * w / nw, (y_n * size - oy) * h / nh, score]

    out = []
    for coco in OPENPOSE_FROM_COCO:
        if coco is not None:
            out.append(point(coco))
            continue
        r, l = point(6), point(5)
        if r[2] > 0 and l[2] > 0:
            out.append([(r[0] + l[0]) / 2, (r[1] + l[1]) / 2, min(r[2], l[2])])
        else:
            out.append([0.0, 0.0, 0.0])
    return out


def int8_kernels():
    """The class of ONNX Runtime's int8 kernels this CPU runs: "vnni" or "no-vnni" (see the module's notes)."""
    with open("/proc/cpuinfo") as f:
        flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
    return "vnni" if {"avx512_vnni", "avx_vnni"} & set(flags) else "no-vnni"


def outputs_only():
    """The committed cases' letterboxed inputs through the model on this CPU: outputs_<class>.json."""
    session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    with open(os.path.join(OUT, "cases.json")) as f:
        golden = json.load(f)
    outputs = {}
    for case in golden["cases"]:
        canvas = np.asarray(Image.open(os.path.join(OUT, case["letterbox"])).convert("RGB"), np.uint8)
        raw = session.run([out.name], {inp.name: canvas[None]})[0][0, 0]
        geo = {k: case[k] for k in ("size", "resized", "offset")}
        outputs[case["name"]] = {"raw": [[float(v) for v in row] for row in raw],
                                 "keypoints": to_openpose(raw, *case["frame_size"], geo)}
    kernels = int8_kernels()
    path = os.path.join(OUT, f"outputs_{kernels}.json")
    with open(path, "w") as f:
        json.dump({"onnxruntime": ort.__version__, "int8_kernels": kernels, "cases": outputs}, f, indent=1)
    print(f"wrote {path}")


def decode_frames(tmp):
    """Every frame of the video as full-size RGB PNGs in `tmp` (GStreamer's decoder and converter)."""
    subprocess.run(
        ["gst-launch-1.0", "-q", "filesrc", f"location={VIDEO}", "!", "decodebin", "!", "videoconvert", "!",
         "video/x-raw,format=RGB", "!", "pngenc", "snapshot=false", "!", "multifilesink",
         f"location={os.path.join(tmp, 'f%05d.png')}"],
        check=True)
    return lambda i: Image.open(os.path.join(tmp, f"f{i:05d}.png")).convert("RGB")


def main():
    os.makedirs(OUT, exist_ok=True)
    session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.type == "tensor(uint8)" and inp.shape[1] == inp.shape[2], inp
    size = inp.shape[1]

    images = [("astronaut", None, Image.open(ASTRONAUT).convert("RGB"))]
    with tempfile.TemporaryDirectory() as tmp:
        frame = decode_frames(tmp)
        small = {}
        for i in sorted(set(FRAMES + [PORTRAIT[0]])):
            full = frame(i)
            h = round(full.height * FRAME_WIDTH / full.width)
            small[i] = full.resize((FRAME_WIDTH, h), Image.LANCZOS)
        for i in FRAMES:
            images.append((f"chaplin_{i:03d}", f"chaplin_{i:03d}.png", small[i]))
        i, box = PORTRAIT
        images.append((f"chaplin_{i:03d}_portrait", f"chaplin_{i:03d}_portrait.png", small[i].crop(box)))

    cases = []
    for name, file, image in images:
        if file is not None:
            image.save(os.path.join(OUT, file), optimize=True)
            image = Image.open(os.path.join(OUT, file)).convert("RGB")  # exactly what the Rust test reads
        w, h = image.size
        geo = geometry(w, h, size)
        canvas = letterbox(image, geo)
        Image.fromarray(canvas).save(os.path.join(OUT, f"letterbox_{name}.png"), optimize=True)
        raw = session.run([out.name], {inp.name: canvas[None]})[0][0, 0]
        keypoints = to_openpose(raw, w, h, geo)
        cases.append({
            "name": name,
            "frame": file if file is not None else "../shared/media/astronaut.png",
            "frame_size": [w, h],
            **geo,
            "letterbox": f"letterbox_{name}.png",
            "raw": [[float(v) for v in row] for row in raw],
            "keypoints": keypoints,
        })
        found = sum(1 for k in keypoints if k[2] > 0)
        print(f"{name}: {w}x{h} -> {geo['resized']} at {geo['offset']}, {found}/18 keypoints")

    golden = {
        "model": "../shared/models/movenet/movenet_lightning_int8.onnx",
        "onnxruntime": ort.__version__,
        "threshold": THRESHOLD,
        "int8_kernels": int8_kernels(),
        "resize": "fast_image_resize 6.1 Convolution(Bilinear), U8x3 (bit-exact transcription)",
        "openpose_18": ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
                        "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
                        "right_eye", "left_eye", "right_ear", "left_ear"],
        "cases": cases,
    }
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    import sys
    outputs_only() if sys.argv[1:] == ["--outputs-only"] else main()
