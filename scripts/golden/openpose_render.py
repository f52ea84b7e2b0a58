#!/usr/bin/env python3
"""Golden files for the OpenPose skeleton renderer: tests/golden/openpose/*, from the ControlNet v1.1 original.

The reference is `draw_bodypose` of the ControlNet v1.1 annotator (lllyasviel/ControlNet-v1-1-nightly,
annotator/openpose/util.py at e2b44154b72965c5e11b1ccee941d550682e4701), copied below verbatim except for
comments, with OpenCV doing the drawing (cv2.ellipse2Poly, cv2.fillConvexPoly, cv2.circle) and NumPy the dimming.
Its input is prepared the way that annotator's OpenposeDetector.__call__ prepares it (annotator/openpose/
__init__.py): `candidate` holds every present keypoint in pixels, divided in place by float(W) and float(H) (so the
renderer multiplies back: x / W * W in float64, which is not always x), and `subset` maps each person's 18 parts
to candidate rows, -1 for a missing part. latentcam's convention: a keypoint is missing when its score is not
> 0 (`Keypoint.score` 0), and keypoint coordinates are f32 frame pixels (every coordinate below is an exact f32
value, so the JSON round-trips to the same f32 in Rust).

Colour order: the canvas is an RGB image; `colors[i]` goes to channels (0, 1, 2) unchanged (the v1.1 gradio
apps feed the array to the model as RGB, and controlnet_aux hands it to PIL.Image.fromarray, i.e. RGB too), so the
palette is RGB: limb 0 (neck -> right shoulder) is red, limb 12 (neck -> nose) is blue.

Writes tests/golden/openpose/cases.json (each case: name, width, height, png, people = 18 [x, y, score] each) and
one RGB PNG per case.

Run (the committed goldens were written with the first environment and checked with the second, the one the v1.1
annotator pinned in its environment.yaml: python 3.8.5, numpy 1.23.1, opencv 4.3.0.36; they agree pixel for pixel):
    python3 -m venv /tmp/venv-pose
    /tmp/venv-pose/bin/pip install numpy==2.4.6 opencv-python-headless==5.0.0.93
    /tmp/venv-pose/bin/python scripts/golden/openpose_render.py
    python3.8 -m venv /tmp/venv-pose43
    /tmp/venv-pose43/bin/pip install numpy==1.23.1 opencv-python-headless==4.3.0.38
    /tmp/venv-pose43/bin/python scripts/golden/openpose_render.py --check
(--check renders every case again and compares it with the committed PNGs instead of writing anything.)

Stress mode, for checking the Rust port far beyond the committed cases (nothing committed):
    /tmp/venv-pose/bin/python scripts/golden/openpose_render.py --stress 2000 /tmp/openpose-stress
    LATENTCAM_OPENPOSE_GOLDEN=/tmp/openpose-stress cargo test --release --test openpose_render
(2000 random cases, 8..800 px a side, 1-5 people, points up to half a frame outside it, axis-aligned limbs.)
"""
import json
import math
import os
import random
import struct
import sys
import zlib

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "tests", "golden", "openpose")


# ---- the original: ControlNet-v1-1-nightly annotator/openpose/util.py, draw_bodypose (verbatim) ----
def draw_bodypose(canvas, candidate, subset):
    H, W, C = canvas.shape
    candidate = np.array(candidate)
    subset = np.array(subset)

    stickwidth = 4

    limbSeq = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], \
               [10, 11], [2, 12], [12, 13], [13, 14], [2, 1], [1, 15], [15, 17], \
               [1, 16], [16, 18], [3, 17], [6, 18]]

    colors = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0], \
              [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255], \
              [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]

    for i in range(17):
        for n in range(len(subset)):
            index = subset[n][np.array(limbSeq[i]) - 1]
            if -1 in index:
                continue
            Y = candidate[index.astype(int), 0] * float(W)
            X = candidate[index.astype(int), 1] * float(H)
            mX = np.mean(X)
            mY = np.mean(Y)
            length = ((X[0] - X[1]) ** 2 + (Y[0] - Y[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(X[0] - X[1], Y[0] - Y[1]))
            polygon = cv2.ellipse2Poly((int(mY), int(mX)), (int(length / 2), stickwidth), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, colors[i])

    canvas = (canvas * 0.6).astype(np.uint8)

    for i in range(18):
        for n in range(len(subset)):
            index = int(subset[n][i])
            if index == -1:
                continue
            x, y = candidate[index][0:2]
            x = int(x * W)
            y = int(y * H)
            cv2.circle(canvas, (int(x), int(y)), 4, colors[i], thickness=-1)

    return canvas
# ---- end of the original ----


def render(width, height, people):
    """What OpenposeDetector.__call__ + draw_pose do with `people` (18 (x, y, score) each, frame pixels)."""
    candidate = []
    subset = []
    for person in people:
        row = []
        for x, y, score in person:
            if score > 0:
                row.append(len(candidate))
                candidate.append([x, y])
            else:
                row.append(-1)
        subset.append(row)
    canvas = np.zeros(shape=(height, width, 3), dtype=np.uint8)
    if candidate:
        cand = np.array(candidate, dtype=np.float64)
        cand[:, 0] /= float(width)
        cand[:, 1] /= float(height)
        candidate = cand.tolist()
    if not subset:
        # np.array([]) has no rows; the original's loops do nothing, but give it the shape it expects.
        return draw_bodypose(canvas, np.zeros((0, 2)), np.zeros((0, 18)))
    return draw_bodypose(canvas, candidate, subset)


def f32(v):
    return struct.unpack("f", struct.pack("f", v))[0]


def kp(x, y, score=1.0):
    return [f32(x), f32(y), f32(score)]


MISSING = [0.0, 0.0, 0.0]

# A standing person in a 512 x 512 frame, OpenPose-18 order.
STANDING = [
    (256.3, 96.7), (255.1, 150.2), (210.4, 152.9), (190.8, 215.5), (185.2, 276.1), (300.6, 148.3),
    (322.9, 210.7), (330.5, 270.25), (228.7, 280.4), (225.1, 360.9), (222.6, 440.3), (285.2, 281.7),
    (290.5, 361.2), (294.8, 442.6), (245.5, 85.1), (267.9, 84.4), (232.2, 92.8), (280.7, 91.6),
]


def person(points, scale=1.0, dx=0.0, dy=0.0, missing=()):
    out = []
    for i, (x, y) in enumerate(points):
        out.append(MISSING if i in missing else kp(x * scale + dx, y * scale + dy, 0.9))
    return out


def star(cx, cy, radius, start_deg, step_deg):
    """A person whose 18 points sit on a circle around (cx, cy): limbs at many angles, in every quadrant."""
    pts = []
    for i in range(18):
        a = math.radians(start_deg + step_deg * i)
        r = radius * (0.35 + 0.65 * ((i * 7) % 18) / 17.0)
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    pts[1] = (cx, cy)  # the neck at the centre: five limbs leave it
    return person(pts)


# Each point's neighbour towards the neck along a limb (the neck's is the nose): random people snap some points
# to their neighbour's x or y, so limbs are exactly horizontal or vertical (angles 0, 180, +-90).
PARENT = [1, 0, 1, 2, 3, 1, 5, 6, 1, 8, 9, 1, 11, 12, 0, 0, 14, 15]
ORDER = [1, 0] + list(range(2, 18))  # every point after its PARENT


def random_people(rng, width, height, count, margin, p_missing):
    people = []
    for _ in range(count):
        cx = rng.uniform(-margin * width, (1 + margin) * width)
        cy = rng.uniform(-margin * height, (1 + margin) * height)
        size = rng.uniform(0.02, 0.9) * min(width, height)
        pts = [None] * 18
        for i in ORDER:
            if rng.random() < p_missing:
                pts[i] = MISSING
                continue
            x = cx + rng.uniform(-size, size)
            y = cy + rng.uniform(-size, size)
            kind = rng.random()
            if kind < 0.15:
                x, y = float(round(x)), float(round(y))  # integers: x / W * W may land just below
            elif kind < 0.25:
                x, y = math.floor(x) + 0.5, math.floor(y) + 0.5
            parent = pts[PARENT[i]]
            if parent is not None and parent[2] > 0:
                snap = rng.random()
                if snap < 0.1:
                    x = parent[0]
                elif snap < 0.2:
                    y = parent[1]
                elif snap < 0.25:
                    x, y = parent[0] + rng.choice([-1.0, 1.0]) * rng.randint(0, 3), parent[1] + rng.randint(-3, 3)
            pts[i] = kp(x, y, rng.uniform(0.05, 1.0))
        people.append(pts)
    return people


# Limbs at exactly 0, 180 and +-90 degrees with odd and even half-lengths (ellipse points on .5 ties).
AXIS_ALIGNED = [
    (100.0, 29.0),  # nose; (1, 0): angle 90, axes 15
    (100.0, 60.0),  # neck
    (78.0, 60.0),  # (1, 2): dx 22 > 0, angle 0, axes 11
    (78.0, 87.0),  # (2, 3): angle -90, axes 13
    (78.0, 60.5),  # (3, 4): angle 90, axes 13
    (123.0, 60.0),  # (1, 5): dx -23, angle 180, axes 11
    (123.5, 91.0),  # (5, 6): angle -90.9 -> -90, axes 15
    (150.5, 91.0),  # (6, 7): angle 180, axes 13
    (101.0, 130.0),  # (1, 8): mean x 100.5
    (101.0, 171.0),  # axes 20
    (101.0, 214.0),  # axes 21
    (140.0, 130.0),
    (181.0, 130.0),  # angle 180, axes 20
    (140.0, 130.0),  # angle 0, axes 20
    (91.0, 29.0),  # angle 0, axes 4
    (109.0, 29.0),  # angle 180, axes 4
    (91.0, 20.0),  # angle 90, axes 4
    (109.0, 38.0),  # angle -90, axes 4
]


def cases():
    out = []
    out.append(("empty_64x48", 64, 48, []))
    out.append(("standing_512", 512, 512, [person(STANDING)]))
    out.append(("missing_512x384", 512, 384, [
        person(STANDING, 0.75, 10.0, -5.0, missing={4, 9, 14, 17}),
        person(STANDING, 0.5, 250.0, 100.0, missing={0, 1}),  # no neck: nothing from it is drawn
        person(STANDING, 0.6, 330.0, 10.0, missing=set(range(2, 18))),  # nose and neck only: one limb
        person(STANDING, 0.6, 100.0, 200.0, missing=set(range(18)) - {7}),  # a lone joint
    ]))
    out.append(("edges_333x517", 333, 517, [
        # Points on, near and beyond every edge; limbs that cross the frame and limbs wholly outside it.
        [kp(0.0, 0.0), kp(3.0, 5.0), kp(-4.0, 30.0), kp(-40.5, 80.0), kp(-100.0, -100.0), kp(332.0, 0.0),
         kp(333.0, 40.0), kp(340.25, 120.0), kp(400.0, 516.9), kp(0.5, 516.0), kp(-0.75, 517.0), kp(166.0, 516.5),
         kp(160.0, 530.0), kp(150.0, 600.0), kp(-3.9, -3.9), kp(336.0, -2.0), kp(-7.0, 250.0), kp(337.0, 520.0)],
        [kp(332.9, 516.9), kp(300.0, 490.0), kp(333.5, 480.0), kp(345.0, 470.0), kp(1000.0, 460.0),
         kp(290.0, 520.5), kp(280.0, 560.0), kp(-20.0, 1200.0), kp(310.0, 200.0), kp(320.0, -50.0),
         kp(10.0, -300.0), kp(100.0, 470.0), kp(60.0, 480.0), kp(-60.0, 500.0), kp(1.0, 1.0), kp(2.0, 2.0),
         kp(4.0, 0.0), kp(0.0, 4.0)],
    ]))
    out.append(("multi_640x360", 640, 360, [
        person(STANDING, 0.7, -20.0, -10.0),
        person(STANDING, 0.7, 60.0, 0.0),  # overlaps the first: limb-major drawing order shows
        person(STANDING, 0.4, 400.0, 150.0),
        person(STANDING, 1.2, 250.0, -150.0, missing={15}),
    ]))
    out.append(("angles_300", 300, 300, [star(150.0, 150.0, 140.0, 0.0, 20.0), star(150.0, 150.0, 90.0, 7.5, -21.25)]))
    out.append(("angles_odd_257x129", 257, 129, [star(60.0, 64.0, 70.0, 45.0, 45.0), star(190.0, 70.0, 60.0, 1.0, 22.5),
                                                  star(128.5, 64.5, 30.0, -90.0, 30.0)]))
    short = [kp(50.0 + 10.0 * (i % 6), 40.0 + 12.0 * (i // 6)) for i in range(18)]
    short[2] = kp(50.0, 40.0)  # [2, 3] (0-based 1, 2): length 0 (both ends on one pixel)
    short[3] = kp(50.9, 40.4)  # [3, 4]: length < 1
    short[4] = kp(52.5, 41.0)  # [4, 5]: length < 2, axes (0, 4)
    short[6] = kp(short[5][0] + 3.0, short[5][1] + 4.0)  # length 5 exactly
    short[9] = kp(short[8][0] + 0.0, short[8][1] + 3.99)
    out.append(("short_long_200x160", 200, 160, [
        short,
        # Long limbs: across the whole frame and beyond it, and a wide near-horizontal/vertical pair.
        [kp(-500.0, -400.0), kp(700.0, 560.0), kp(-300.0, 800.0), kp(199.0, 0.0), kp(0.0, 159.0), kp(1.0, 80.0),
         kp(199.0, 81.0), kp(100.0, 0.0), kp(101.0, 159.0), kp(5.0, 5.0), kp(195.0, 155.0), kp(195.0, 5.0),
         kp(5.0, 155.0), kp(100.0, 80.0), kp(-1000.0, 80.0), kp(1000.0, 81.0), kp(100.0, -1000.0), kp(101.0, 1000.0)],
    ]))
    out.append(("axis_aligned_200x240", 200, 240, [
        person(AXIS_ALIGNED), person(AXIS_ALIGNED, 0.5, 100.25, 120.25), person(AXIS_ALIGNED, 1.5, -60.0, 10.0),
    ]))
    out.append(("tiny_17x9", 17, 9, [person(STANDING, 0.03, 1.0, -1.0), [kp(8.0, 4.0)] * 18]))
    rng = random.Random(20240611)
    for i, (w, h) in enumerate([(512, 384), (333, 517), (640, 480), (96, 160), (768, 432)]):
        out.append((f"random{i}_{w}x{h}", w, h, random_people(rng, w, h, 1 + i % 4, 0.2, 0.2)))
    return out


def png_rgb(path, img):
    """A plain RGB PNG (no Pillow needed): the exact bytes of `img`, HxWx3 uint8."""
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def stress_cases(count):
    rng = random.Random(7)
    out = []
    for i in range(count):
        w, h = rng.randint(8, 800), rng.randint(8, 800)
        out.append((f"stress{i}_{w}x{h}", w, h, random_people(rng, w, h, rng.randint(1, 5), 0.5, 0.15)))
    return out


def main():
    args = sys.argv[1:]
    check = "--check" in args
    out_dir, todo = OUT, cases()
    if "--stress" in args:
        at = args.index("--stress")
        out_dir, todo = args[at + 2], stress_cases(int(args[at + 1]))
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, opencv {cv2.__version__}")
    manifest = {
        "source": "ControlNet-v1-1-nightly annotator/openpose/util.py draw_bodypose (e2b44154), "
                  "via scripts/golden/openpose_render.py",
        "cases": [],
    }
    os.makedirs(out_dir, exist_ok=True)
    bad = 0
    for name, w, h, people in todo:
        img = render(w, h, people)
        assert img.shape == (h, w, 3) and img.dtype == np.uint8
        png = f"{name}.png"
        manifest["cases"].append({"name": name, "width": w, "height": h, "png": png, "people": people})
        path = os.path.join(out_dir, png)
        if check:
            ref = cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1]  # the PNG is RGB; OpenCV reads BGR
            diff = int(np.count_nonzero(np.any(ref != img, axis=2)))
            if diff or len(todo) < 50:
                print(f"{name}: {diff} differing pixels")
            bad += diff > 0
        else:
            png_rgb(path, img)
            if len(todo) < 50:
                print(f"{name}: {w}x{h}, {len(people)} people, {int(np.count_nonzero(img.any(axis=2)))} lit pixels")
    if check:
        with open(os.path.join(out_dir, "cases.json")) as f:
            if json.load(f)["cases"] != json.loads(json.dumps(manifest["cases"])):
                print("cases.json differs from the cases this script makes")
                bad += 1
        print(f"{len(todo)} cases checked, {bad} differ")
        sys.exit(1 if bad else 0)
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"{len(todo)} cases written to {out_dir}")


if __name__ == "__main__":
    main()
