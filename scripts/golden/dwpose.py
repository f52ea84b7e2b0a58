#!/usr/bin/env python3
"""Golden files for the DWPose estimator: tests/golden/dwpose/*, from onnxruntime (Python) on the tiny stand-ins in
models/tiny-dwpose (scripts/export_pose.py tiny).

The reference is DWPose's own ONNX pipeline (IDEA-Research/DWPose, ControlNet-v1-1-nightly/annotator/dwpose:
onnxdet.py, onnxpose.py, wholebody.py), re-written here step by step, with two resampling steps replaced by
transcriptions of latentcam's (so that the comparison is exact rather than within an interpolation's rounding):

  detector input  scale r = min(640/h, 640/w), resized size (int(w*r), int(h*r)) (truncated), placed top-left on
                  114 grey, RGB (the frame as the annotator gets it), float 0..255, NCHW, no normalisation. The
                  original resizes with cv2.resize INTER_LINEAR; latentcam with fast_image_resize 6.1
                  Interpolation(Bilinear) (the same 2-tap triangle filter without widening when downscaling, i16
                  fixed point), transcribed here bit for bit. cv2 differs from it by at most MAX_RESIZE_DIFF levels
                  (checked below).
  detections      per anchor: centre (d + grid) * stride, size exp(.) * stride, score = objectness * class score;
                  class-aware NMS (IoU > 0.45 suppressed, areas with the +1 pixel convention) over scores > 0.1,
                  then class 0 (person) with score > 0.3; boxes divided by r (frame pixels, not clipped).
                  No box: the whole frame is the one box (as the original).
  pose input      per box, centre and size * 1.25, widened or heightened to the model's 3:4 aspect; the crop is
                  warped to 288 x 384 so that the box centre lands on the input's (144, 192) at a uniform scale
                  s = size_w / 288 (source pixels per input pixel). latentcam samples it bilinearly in floating
                  point with pixel centres at integer coordinates and 0 outside the frame (this transcription);
                  the original's cv2.warpAffine INTER_LINEAR does the same in fixed point (1/32-pixel positions,
                  15-bit weights) and rounds to u8: measured below as MAX_WARP_DIFF levels at most. Then
                  (v - mean) / std per RGB channel.
  SimCC           per keypoint the argmax bin of simcc_x and of simcc_y (the first on ties), divided by the split
                  ratio 2; score = the smaller of the two maxima; back to the frame: p / (288, 384) * size +
                  centre - size / 2.
  OpenPose-18     the first 17 (COCO body) points, reordered; a point scoring below the threshold (0.3) is missing
                  (0, 0, 0). The neck is the midpoint of the shoulders when both are kept, scored the smaller of
                  the two (latentcam's convention, as for MoveNet; the original scores it 1 when both shoulders are
                  above 0.3: a visibility flag). People none of whose 18 points is kept are dropped.

Cases: two small frames made from ../shared/media/astronaut.png and committed here (astronaut_small.png: 256x256,
astronaut_wide.png: a 384x240 landscape crop, letterboxed with bottom padding), and the full 512x512 astronaut.png,
read from ../shared. Each case stores the detector input's per-channel sums, the boxes, and per person the crop
geometry, statistics and samples of the pose input, the raw 17 body points and the 18 OpenPose points. The case
also records how far the original's cv2 resampling moves the keypoints ("original_cv2_max_px", information only).

The script refuses golden files that a tiny float difference could flip: every score must be at least MARGIN from
the 0.1 / 0.3 thresholds, every IoU the NMS compares from 0.45, and every body keypoint's SimCC maximum MIN_GAP (relative) above the
runner-up.

Run: .venv-scripts/bin/python scripts/golden/dwpose.py   (needs ../shared/media and models/tiny-dwpose)
"""
import json
import os
import sys

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from movenet import fir_coefficients, fir_pass  # noqa: E402  (latentcam's resize, transcribed there)

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
MODELS = os.path.join(ROOT, "models", "tiny-dwpose")
ASTRONAUT = os.path.join(SHARED, "media", "astronaut.png")
OUT = os.path.join(ROOT, "tests", "golden", "dwpose")

THRESHOLD = 0.3
NMS_IOU, SCORE_MIN, PERSON_MIN = 0.45, 0.1, 0.3
PADDING = 1.25
MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])
SPLIT_RATIO = 2.0
MARGIN = 1e-3  # how far from a threshold a value must be (scores, IoU)
MIN_GAP = 1e-4  # how far above the runner-up a body keypoint's SimCC maximum must be (relative)
MAX_RESIZE_DIFF = 2
MAX_WARP_DIFF = 2.0
SAMPLES = 64  # pose input values stored per person

COCO = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
        "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
        "right_ankle"]
OPENPOSE_FROM_COCO = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]


# ------------------------------------------------------------------------------------------ latentcam's resampling


def fir_interpolation(src, width, height):
    """fast_image_resize Resizer::resize, ResizeAlg::Interpolation(FilterType::Bilinear), U8x3."""
    h, w = src.shape[:2]
    out = src
    if height != h:  # u8 images: the vertical pass first
        out = fir_pass(*fir_coefficients(h, height, False), out, 0)
    if width != w:
        out = fir_pass(*fir_coefficients(w, width, False), out, 1)
    return out


def warp(frame, center, size_w, out_w, out_h):
    """latentcam's crop warp: float bilinear, pixel centres at integer coordinates, 0 outside; separable because
    the transform is a uniform scale and a shift. Returns out_h x out_w x 3 float64."""
    h, w = frame.shape[:2]
    s = size_w / out_w

    def taps(n_out, c, n_in):
        src = c + (np.arange(n_out, dtype=np.float64) - n_out / 2.0) * s
        i0 = np.floor(src)
        f = src - i0
        i0 = i0.astype(np.int64)
        return i0, f, n_in

    x0, fx, _ = taps(out_w, center[0], w)
    y0, fy, _ = taps(out_h, center[1], h)
    padded = np.zeros((h + 2, w + 2, 3), np.float64)  # one pixel of zeros around: taps just outside read 0
    padded[1:-1, 1:-1] = frame

    def clamp(i, n):
        return np.clip(i + 1, 0, n + 1)  # indices into the padded frame; further out still reads the zero border

    xa, xb = clamp(x0, w), clamp(x0 + 1, w)
    ya, yb = clamp(y0, h), clamp(y0 + 1, h)
    fx = fx[None, :, None]
    fy = fy[:, None, None]
    top = padded[ya][:, xa] * (1 - fx) + padded[ya][:, xb] * fx
    bottom = padded[yb][:, xa] * (1 - fx) + padded[yb][:, xb] * fx
    return top * (1 - fy) + bottom * fy


# ------------------------------------------------------------------------------------------ the original's steps


def det_geometry(w, h, size):
    r = min(size / h, size / w)
    return r, max(1, int(w * r)), max(1, int(h * r))


def det_input(frame, size, resize):
    h, w = frame.shape[:2]
    r, nw, nh = det_geometry(w, h, size)
    canvas = np.full((size, size, 3), 114, np.uint8)
    canvas[:nh, :nw] = resize(frame, nw, nh)
    return canvas, r


def decode_detections(raw, size):
    """raw: [N, 85] float32 -> boxes xyxy (input pixels, float32), scores [N, classes] (float32)."""
    out = raw.copy()
    grids, strides = [], []
    for stride in (8, 16, 32):
        side = size // stride
        xv, yv = np.meshgrid(np.arange(side), np.arange(side))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((side * side, 1), stride))
    grids, strides = np.concatenate(grids), np.concatenate(strides)
    out[:, :2] = (out[:, :2] + grids) * strides
    out[:, 2:4] = np.exp(out[:, 2:4]) * strides
    boxes = np.empty_like(out[:, :4])
    boxes[:, 0] = out[:, 0] - out[:, 2] / 2.0
    boxes[:, 1] = out[:, 1] - out[:, 3] / 2.0
    boxes[:, 2] = out[:, 0] + out[:, 2] / 2.0
    boxes[:, 3] = out[:, 1] + out[:, 3] / 2.0
    return boxes, out[:, 4:5] * out[:, 5:]


def nms(boxes, scores, iou_max, checks):
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        checks.extend(float(v) for v in iou)
        order = rest[iou <= iou_max]
    return keep


def detect(session, frame, resize):
    size = session.get_inputs()[0].shape[2]
    canvas, r = det_input(frame, size, resize)
    x = canvas.transpose(2, 0, 1)[None].astype(np.float32)
    raw = session.run(None, {session.get_inputs()[0].name: x})[0][0]
    boxes, scores = decode_detections(raw, size)
    boxes /= np.float32(r)
    ious, found = [], []
    for cls in range(scores.shape[1]):
        s = scores[:, cls]
        mask = s > SCORE_MIN
        if not mask.any():
            continue
        b, s = boxes[mask], s[mask]
        for k in nms(b, s, NMS_IOU, ious if cls == 0 else []):
            if cls == 0 and s[k] > PERSON_MIN:
                found.append([float(v) for v in b[k]] + [float(s[k])])
    return canvas, r, found, scores[:, 0], ious


def crop_geometry(box, out_w, out_h):
    x0, y0, x1, y1 = (np.float32(v) for v in box[:4])
    center = np.array([x0 + x1, y0 + y1], np.float32) * np.float32(0.5)
    scale = np.array([x1 - x0, y1 - y0], np.float32) * np.float32(PADDING)
    aspect = out_w / out_h
    w, h = scale
    scale = np.array([w, w / aspect] if w > h * aspect else [h * aspect, h], np.float32)
    return center, scale


def pose_for_box(session, frame, box, warp_fn):
    _, _, out_h, out_w = session.get_inputs()[0].shape
    center, scale = crop_geometry(box, out_w, out_h)
    crop = warp_fn(frame, center.astype(np.float64), float(scale[0]), out_w, out_h)
    x = ((crop - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    simcc_x, simcc_y = session.run(["simcc_x", "simcc_y"], {"input": x})
    sx, sy = simcc_x[0], simcc_y[0]
    xi, yi = np.argmax(sx, axis=1), np.argmax(sy, axis=1)
    mx, my = sx.max(axis=1), sy.max(axis=1)
    gaps = []  # relative margin of each body keypoint's maximum over its runner-up
    for row, i in ((sx, xi), (sy, yi)):
        for k in range(17):
            gaps.append(float((row[k, i[k]] - np.max(np.delete(row[k], i[k]))) / row[k, i[k]]))
    locs = np.stack([xi, yi], -1).astype(np.float32)
    vals = np.minimum(mx, my)
    locs[vals <= 0] = -1
    locs /= SPLIT_RATIO
    points = locs / (out_w, out_h) * scale + center - scale / 2
    return center, scale, x, np.concatenate([points, vals[:, None]], 1), gaps


def to_openpose(body):
    def point(i):
        x, y, score = (float(v) for v in body[i])
        if score < THRESHOLD or score <= 0:
            return [0.0, 0.0, 0.0]
        return [x, y, score]

    out = []
    for coco in OPENPOSE_FROM_COCO:
        if coco is not None:
            out.append(point(coco))
            continue
        r, l = point(6), point(5)
        out.append([(r[0] + l[0]) / 2, (r[1] + l[1]) / 2, min(r[2], l[2])] if r[2] > 0 and l[2] > 0 else [0.0] * 3)
    return out


def cv2_resize(frame, w, h):
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)


def cv2_warp(frame, center, size_w, out_w, out_h):
    """The original's get_warp_matrix (rot 0, no shift) + cv2.warpAffine INTER_LINEAR, as u8."""
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + np.array([0.0, -size_w * 0.5])
    src[2] = src[1] + np.array([-(src[0] - src[1])[1], (src[0] - src[1])[0]])
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = dst[0] + np.array([0.0, -out_w * 0.5])
    dst[2] = dst[1] + np.array([-(dst[0] - dst[1])[1], (dst[0] - dst[1])[0]])
    m = cv2.getAffineTransform(src, dst)
    return cv2.warpAffine(frame, m, (out_w, out_h), flags=cv2.INTER_LINEAR).astype(np.float64)


def run_case(det, pose, frame, checks):
    """Everything for one frame, latentcam's resampling; `checks` collects what must not sit on a threshold."""
    canvas, r, boxes, person_scores, ious = detect(det, frame, fir_interpolation)
    h, w = frame.shape[:2]
    checks["scores"] += [float(s) for s in person_scores if abs(s - SCORE_MIN) < 0.05 or abs(s - PERSON_MIN) < 0.05]
    checks["ious"] += ious
    found = boxes if boxes else [[0.0, 0.0, float(w), float(h), 0.0]]
    people = []
    for box in found:
        center, scale, x, body, gaps = pose_for_box(pose, frame, box, warp)
        checks["gaps"] += gaps
        checks["body_scores"] += [float(v) for v in body[:17, 2]]
        keypoints = to_openpose(body[:17])
        flat = x[0].reshape(3, -1)
        idx = np.linspace(0, flat.shape[1] - 1, SAMPLES).astype(np.int64)
        people.append({
            "box": box[:4],
            "box_score": box[4],
            "center": [float(v) for v in center],
            "scale": [float(v) for v in scale],
            "input_mean": [float(v) for v in flat.mean(axis=1)],
            "input_samples_at": [int(i) for i in idx],
            "input_samples": [[float(v) for v in flat[c, idx]] for c in range(3)],
            "body": [[float(v) for v in p] for p in body[:17]],
            "keypoints": keypoints,
            "kept": any(k[2] > 0 for k in keypoints),
        })
    return canvas, r, boxes, people


def original_cv2(det, pose, frame, people):
    """The same frame through the original's cv2 resampling: the largest keypoint move (px) over the keypoints
    both keep, and how many OpenPose points change presence (information only)."""
    resize_diff = np.abs(det_input(frame, det.get_inputs()[0].shape[2], cv2_resize)[0].astype(np.int16)
                         - det_input(frame, det.get_inputs()[0].shape[2], fir_interpolation)[0]).max()
    assert resize_diff <= MAX_RESIZE_DIFF, resize_diff
    _, _, boxes, _, _ = detect(det, frame, cv2_resize)
    h, w = frame.shape[:2]
    boxes = boxes if boxes else [[0.0, 0.0, float(w), float(h), 0.0]]
    if len(boxes) != len(people):
        return {"people": len(boxes)}
    moved, flipped, warp_diff = 0.0, 0, 0.0
    for box, person in zip(boxes, people):
        center, scale = crop_geometry(box, 288, 384)
        ours = warp(frame, center.astype(np.float64), float(scale[0]), 288, 384)
        theirs = cv2_warp(frame, center, float(scale[0]), 288, 384)
        warp_diff = max(warp_diff, float(np.abs(ours - theirs).max()))
        body = pose_for_box(pose, frame, box, cv2_warp)[3]
        for a, b in zip(to_openpose(body[:17]), person["keypoints"]):
            if (a[2] > 0) != (b[2] > 0):
                flipped += 1
            elif a[2] > 0:
                moved = max(moved, abs(a[0] - b[0]), abs(a[1] - b[1]))
    assert warp_diff <= MAX_WARP_DIFF, warp_diff
    return {"people": len(boxes), "max_resize_diff": int(resize_diff), "max_warp_diff": round(warp_diff, 3),
            "max_px": round(moved, 3), "presence_changes": flipped}


def main():
    os.makedirs(OUT, exist_ok=True)
    det = ort.InferenceSession(os.path.join(MODELS, "yolox_l.onnx"), providers=["CPUExecutionProvider"])
    pose = ort.InferenceSession(os.path.join(MODELS, "dw-ll_ucoco_384.onnx"), providers=["CPUExecutionProvider"])
    astronaut = Image.open(ASTRONAUT).convert("RGB")
    small = astronaut.resize((256, 256), Image.LANCZOS)
    wide = astronaut.crop((0, 100, 512, 420)).resize((384, 240), Image.LANCZOS)
    images = [("astronaut_small", "astronaut_small.png", small), ("astronaut_wide", "astronaut_wide.png", wide),
              ("astronaut", None, astronaut)]
    cases = []
    checks = {"scores": [], "ious": [], "gaps": [], "body_scores": []}
    for name, file, image in images:
        if file is not None:
            image.save(os.path.join(OUT, file), optimize=True)
            image = Image.open(os.path.join(OUT, file)).convert("RGB")  # exactly what the Rust test reads
        frame = np.asarray(image, np.uint8)
        h, w = frame.shape[:2]
        canvas, r, boxes, people = run_case(det, pose, frame, checks)
        _, nw, nh = det_geometry(w, h, canvas.shape[0])
        sums = canvas.reshape(-1, 3).astype(np.int64).sum(axis=0)
        weights = (np.arange(canvas.shape[0] * canvas.shape[1], dtype=np.int64) % 251)[:, None]
        weighted = (canvas.reshape(-1, 3).astype(np.int64) * weights).sum(axis=0)
        info = original_cv2(det, pose, frame, people)
        cases.append({
            "name": name,
            "frame": file if file is not None else "../shared/media/astronaut.png",
            "frame_size": [w, h],
            "det_ratio": r,
            "det_resized": [nw, nh],
            "det_input_sums": [int(v) for v in sums],
            "det_input_weighted_sums": [int(v) for v in weighted],
            "boxes": boxes,
            "people": people,
            "original_cv2": info,
        })
        kept = [sum(1 for k in p["keypoints"] if k[2] > 0) for p in people]
        print(f"{name}: {w}x{h}, {len(boxes)} boxes, keypoints kept per person {kept}; original cv2 path: {info}")

    near = [s for s in checks["scores"] if min(abs(s - SCORE_MIN), abs(s - PERSON_MIN)) < MARGIN]
    assert not near, f"detection scores too close to a threshold: {near}"
    near = [v for v in checks["ious"] if abs(v - NMS_IOU) < MARGIN]
    assert not near, f"IoUs too close to {NMS_IOU}: {near}"
    assert min(checks["gaps"]) > MIN_GAP, f"a SimCC maximum is within {MIN_GAP} of its runner-up"
    near = [v for v in checks["body_scores"] if abs(v - THRESHOLD) < MARGIN]
    assert not near, f"keypoint scores too close to {THRESHOLD}: {near}"
    print(f"margins: smallest SimCC gap {min(checks['gaps']):.2e}, "
          f"IoU nearest 0.45 {min(checks['ious'], key=lambda v: abs(v - NMS_IOU)):.4f}, "
          f"score nearest 0.3 {min(checks['body_scores'], key=lambda v: abs(v - THRESHOLD)):.4f}")

    golden = {
        "models": "models/tiny-dwpose (scripts/export_pose.py tiny)",
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "threshold": THRESHOLD,
        "det_resize": "fast_image_resize 6.1 Interpolation(Bilinear), U8x3 (bit-exact transcription)",
        "pose_warp": "float bilinear, pixel centres at integer coordinates, 0 outside (transcription)",
        "cases": cases,
    }
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
