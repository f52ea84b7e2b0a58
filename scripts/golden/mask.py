#!/usr/bin/env python3
"""Golden files for the mask sources: tests/golden/mask/*, from MediaPipe's own Python solutions.

MediaPipe runs the TFLite models with its own preprocessing and postprocessing (mp.solutions.selfie_segmentation,
mp.solutions.face_detection, `mediapipe==0.10.14`, the wheel the ONNX files in models/mediapipe-selfie were made
from); latentcam runs the ONNX conversions with its Rust re-implementation of that processing (src/mask/). So these
goldens check the whole chain, not one model run:

  segmenter   SelfieSegmentation(model_selection=0 general 256x256, =1 landscape 256x144): the frame stretched to
              the model's input (an OpenCV warp, bilinear, no antialiasing), RGB 0..1 -> person probability, resized
              back to the frame (cv::resize, bilinear). Stored as 16-bit grayscale PNG (probability x 65535).
  faces       FaceDetection(model_selection=0, min_detection_confidence=0.5): BlazeFace short range, the frame
              letterboxed to 128x128 (-1..1), SSD anchor decoding, weighted NMS at IoU 0.3. Stored in faces.json in
              frame pixels: box [xmin, ymin, width, height] and the 6 keypoints [x, y] (right eye, left eye, nose
              tip, mouth, right ear tragion, left ear tragion), with the score.

Cases: ../shared/media/camera.png and astronaut.png (512x512), and two crops of astronaut.png that test the
non-square paths: "astronaut_wide" = rows 0..288 (512x288, 16:9: vertical letterbox padding for faces, the landscape
model's own aspect) and "astronaut_tall" = columns 112..400 (288x512: horizontal padding). The Rust test
(tests/mask.rs) makes the same crops.

Run: scripts/golden/mask.py   (needs a Python 3.11 venv with mediapipe==0.10.14; it pins protobuf 4 and installs
opencv-contrib-python, which would clash with .venv-scripts, so it gets its own:
  python3.11 -m venv .venv-mediapipe && .venv-mediapipe/bin/pip install mediapipe==0.10.14
  .venv-mediapipe/bin/python scripts/golden/mask.py)
"""
import json
import os

import mediapipe as mp
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
MEDIA = os.path.normpath(os.path.join(ROOT, "..", "shared", "media"))
OUT = os.path.join(ROOT, "tests", "golden", "mask")

MIN_FACE_SCORE = 0.5


def cases():
    """name -> RGB uint8 array, as tests/mask.rs builds them."""
    camera = np.array(Image.open(os.path.join(MEDIA, "camera.png")).convert("RGB"))
    astronaut = np.array(Image.open(os.path.join(MEDIA, "astronaut.png")).convert("RGB"))
    return {
        "camera": camera,
        "astronaut": astronaut,
        "astronaut_wide": np.ascontiguousarray(astronaut[0:288, :, :]),
        "astronaut_tall": np.ascontiguousarray(astronaut[:, 112:400, :]),
    }


def segment(image, model_selection):
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection) as s:
        mask = s.process(image).segmentation_mask
    assert mask.shape == image.shape[:2], mask.shape
    return mask


def faces(image):
    h, w = image.shape[:2]
    with mp.solutions.face_detection.FaceDetection(model_selection=0,
                                                   min_detection_confidence=MIN_FACE_SCORE) as f:
        result = f.process(image)
    out = []
    for d in result.detections or []:
        box = d.location_data.relative_bounding_box
        out.append({
            "score": float(d.score[0]),
            "box": [box.xmin * w, box.ymin * h, box.width * w, box.height * h],
            "keypoints": [[k.x * w, k.y * h] for k in d.location_data.relative_keypoints],
        })
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    summary = {"mediapipe": mp.__version__, "min_face_score": MIN_FACE_SCORE, "cases": {}}
    for name, image in cases().items():
        h, w = image.shape[:2]
        entry = {"size": [w, h], "faces": faces(image), "masks": {}}
        for model, selection in (("general", 0), ("landscape", 1)):
            mask = segment(image, selection)
            file = f"{name}_{model}.png"
            Image.fromarray(np.round(np.clip(mask, 0, 1) * 65535).astype(np.uint16)).save(os.path.join(OUT, file))
            entry["masks"][model] = {"file": file, "person_fraction_at_0.5": float((mask >= 0.5).mean())}
        summary["cases"][name] = entry
        print(name, f"{w}x{h}", len(entry["faces"]), "faces",
              {m: round(v["person_fraction_at_0.5"], 3) for m, v in entry["masks"].items()})
    with open(os.path.join(OUT, "faces.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
