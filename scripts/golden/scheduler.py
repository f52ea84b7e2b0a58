#!/usr/bin/env python3
"""Golden file for the LCM scheduler: tests/golden/lcm_scheduler.json, from diffusers' LCMScheduler itself.

  schedules      steps 1-4 x strengths (LCM img2img rule) and explicit timestep lists: timesteps,
                 alphas_cumprod[t], c_skip, c_out per step, or `error` where diffusers refuses the combination
  trajectories   full multi-step runs with re-noising for each prediction type: add_noise, then step() with
                 given model outputs; diffusers' randn_tensor is replaced by a queue of given noise tensors
  guidance       get_guidance_scale_embedding(w - 1) for a few guidance scales (LCM `timestep_cond`)

Run: .venv-scripts/bin/python scripts/golden/scheduler.py   (scripts/pyenv.sh makes the venv)
"""
import json
import os
import sys

import numpy as np
import torch
from diffusers import LCMScheduler
from diffusers.pipelines.latent_consistency_models import pipeline_latent_consistency_img2img as lcm_img2img
from diffusers.schedulers import scheduling_lcm

# golden_common.py beside this script: the noise queue every diffusers golden uses.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_common as gc  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "golden", "lcm_scheduler.json")
STRENGTHS = [0.04, 0.05, 0.1, 0.2, 0.25, 0.3, 0.35, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 1.0]
CUSTOM = [[999], [999, 499], [899, 599, 299, 99], [499, 259]]


def scalars(sched, timesteps):
    c_skip, c_out = zip(*[sched.get_scalings_for_boundary_condition_discrete(int(t)) for t in timesteps])
    return {
        "timesteps": [int(t) for t in timesteps],
        "alphas_cumprod": [float(sched.alphas_cumprod[int(t)]) for t in timesteps],
        "c_skip": [float(c) for c in c_skip],
        "c_out": [float(c) for c in c_out],
    }


def schedules():
    out = []
    for steps in range(1, 5):
        for strength in STRENGTHS:
            sched = LCMScheduler()
            try:
                sched.set_timesteps(num_inference_steps=steps, strength=strength)
            except ValueError as e:
                out.append({"steps": steps, "strength": strength, "error": str(e)})
                continue
            out.append({"steps": steps, "strength": strength, **scalars(sched, sched.timesteps.tolist())})
    for ts in CUSTOM:
        sched = LCMScheduler()
        sched.set_timesteps(timesteps=ts)
        out.append({"custom": ts, **scalars(sched, sched.timesteps.tolist())})
    return out


def trajectory(prediction_type, steps, strength, rng):
    sched = LCMScheduler(prediction_type=prediction_type)
    sched.set_timesteps(num_inference_steps=steps, strength=strength)
    timesteps = sched.timesteps.tolist()
    shape = (1, 4, 4, 4)
    x0 = rng.standard_normal(shape).astype(np.float32)
    noise = [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)]
    outputs = [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)]
    scheduling_lcm.randn_tensor = gc.NoiseQueue(noise[1:])
    sample = sched.add_noise(torch.from_numpy(x0), torch.from_numpy(noise[0]), torch.tensor([timesteps[0]]))
    noisy = sample.numpy().copy()
    prev, denoised = [], []
    for i, t in enumerate(timesteps):
        p, d = sched.step(torch.from_numpy(outputs[i]), t, sample, return_dict=False)
        prev.append(p.numpy().ravel().tolist())
        denoised.append(d.numpy().ravel().tolist())
        sample = p
    return {
        "prediction_type": prediction_type,
        "steps": steps,
        "strength": strength,
        "timesteps": [int(t) for t in timesteps],
        "shape": list(shape),
        "x0": x0.ravel().tolist(),
        "noise": [n.ravel().tolist() for n in noise],
        "model_outputs": [o.ravel().tolist() for o in outputs],
        "noisy": noisy.ravel().tolist(),
        "prev_sample": prev,
        "denoised": denoised,
    }


def guidance():
    out = []
    for g in [1.0, 1.2, 1.5, 2.0, 2.5, 8.0]:
        w = torch.tensor([g - 1.0])
        emb = lcm_img2img.LatentConsistencyModelImg2ImgPipeline.get_guidance_scale_embedding(None, w, embedding_dim=256)
        out.append({"guidance": g, "dim": 256, "embedding": emb[0].tolist()})
    return out


def main():
    rng = np.random.default_rng(1234)
    trajectories = [
        trajectory(p, steps, strength, rng)
        for p in ["epsilon", "v_prediction", "sample"]
        for steps, strength in [(4, 1.0), (3, 0.6), (1, 0.5)]
    ]
    data = {
        "generator": "scripts/golden/scheduler.py",
        "diffusers": __import__("diffusers").__version__,
        "torch": torch.__version__,
        "schedules": schedules(),
        "trajectories": trajectories,
        "guidance": guidance(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f)
    print(f"wrote {os.path.normpath(OUT)}: {len(data['schedules'])} schedules, {len(trajectories)} trajectories")


if __name__ == "__main__":
    main()
