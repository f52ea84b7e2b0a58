#!/usr/bin/env python3
"""Golden files for ControlNet (OpenPose-style conditioning): tests/golden/controlnet/*, from diffusers' own pipelines.

Models: models/tiny-sd15-lcm-lora-controlnet = tiny-sd15-lcm-lora (SD1.5 + LCM-LoRA shaped: SD VAE, int64 timestep,
no `timestep_cond`, so guidance > 1 means classifier-free guidance) + a tiny random ControlNet (controlnet.onnx) + the
same UNet with residual inputs (unet_controlnet.onnx). The torch modules are rebuilt exactly as
scripts/export_models.py built those ONNX files (same seeds, same order) and checked against them first (below,
`check_against_onnx`, printed): the goldens then test latentcam, not the export.

Cases, all with diffusers' LCMScheduler (default config = the upstream LCM/LCM-LoRA scheduler_config.json:
scaled_linear 0.00085..0.012, original_inference_steps 50, timestep_scaling 10):
  - mode "txt2img": StableDiffusionControlNetPipeline, starting from pure noise.
      Timesteps: the pipeline calls LCMScheduler.set_timesteps(num_inference_steps) with strength 1.0, i.e. the LCM
      training grid: k = 1000 / original_inference_steps = 20, grid = 19, 39, ..., 999 (50 entries, descending),
      num_inference_steps of them picked at floor(linspace(0, 50, n, endpoint=False)): 1 step -> [999],
      2 steps -> [999, 499], 4 steps -> [999, 759, 499, 259].
      Initial latents: latents = noise * scheduler.init_noise_sigma; LCMScheduler's init_noise_sigma is 1.0, so the
      initial latents ARE the stored noise[0] (passed as `latents=`; no scaling by the VAE factor either). Not
      add_noise(0, noise, 999), which would scale the noise by sqrt(1 - alphas_cumprod[999]) = 0.9977.
  - mode "img2img": StableDiffusionControlNetImg2ImgPipeline, from an input image.
      Timesteps: the LCM img2img rule (LatentConsistencyModelImg2ImgPipeline's, which latentcam implements:
      LCMScheduler.set_timesteps(steps, strength=s) -> the grid shrunk to original_inference_steps * s entries),
      e.g. 2 steps at strength 0.6 -> [599, 299], at 0.5 -> [499, 259]. This pipeline's own get_timesteps would
      apply the plain SD img2img rule (2 steps at 0.5 run only [499]), so it is replaced on the instance by the LCM
      rule (the scheduler's timesteps and step index stay consistent: the LCM step re-noises to the next entry).
      Initial latents: scheduler.add_noise(vae_mean(image) * 0.18215, noise[0], t0).
  In both: between steps the LCM step re-noises its denoised estimate to the next timestep with noise[1], noise[2], ...
  (diffusers' randn_tensor hands out the stored tensors; none may be left over). With guidance > 1 the UNet AND the
  ControlNet run on batch 2 = [uncond (prompt ""), cond], the control image duplicated; the ControlNet's residuals
  are multiplied by controlnet_conditioning_scale (a run-time input of controlnet.onnx, `conditioning_scale`).
  The control image reaches the ControlNet as RGB in 0..1, NCHW, no normalisation (png / 255; asserted below).
Two deliberate substitutions, as in scripts/golden/img2img.py (golden_common.py): the VAE encoding is the
distribution's mean (the exported encoders output the mean), and all noise comes from the stored tensors.

Per case (name = cases.json's "name"): NAME_noise.npy [n, 1, 4, h, w] (noise[0] = initial noise, then one per
re-noising), NAME_decoded.npy (the VAE decoder's output before clamping, mapped to 0..1 by x * 0.5 + 0.5, [1,3,H,W]),
NAME_output.npy (diffusers' final image, float 0..1, [1,3,H,W]), NAME_output.png (its 8-bit form, diffusers'
numpy_to_pil: round(x * 255)); img2img also NAME_input.png and NAME_latents.npy (the scaled encoder mean). The control
images (OpenPose-style skeletons, drawn by golden_common.draw_pose: deterministic, no OpenPose renderer needed) are
pose_WxH.png, named by each case's "control". The cases, the substitutions and the recording are golden_common.py's,
shared with scripts/golden/sdxl_controlnet.py.

Run: .venv-scripts/bin/python scripts/golden/controlnet.py   (scripts/pyenv.sh makes the venv; the ONNX models come
from `scripts/export_models.py tiny`)
"""
import json
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, HERE)
import clip_vocab  # noqa: E402
import export_models  # noqa: E402
import golden_common as gc  # noqa: E402
from diffusers import (  # noqa: E402
    LCMScheduler,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
)
from diffusers.pipelines.controlnet import pipeline_controlnet as t2i_mod  # noqa: E402
from diffusers.pipelines.controlnet import pipeline_controlnet_img2img as i2i_mod  # noqa: E402
from diffusers.schedulers import scheduling_lcm  # noqa: E402

OUT = os.path.join(ROOT, "tests", "golden", "controlnet")
MODEL = "tiny-sd15-lcm-lora-controlnet"
BASE = export_models.TINY_CONTROLNETS[MODEL]
# name, mode, prompt, steps, strength, guidance, controlnet scale, size (w, h), noise seed
CASES = gc.CONTROLNET_CASES


def check_against_onnx(mods):
    """The exported controlnet.onnx + unet_controlnet.onnx against diffusers' ControlNetModel + UNet2DConditionModel
    (the torch modules the goldens use) on one random input: batch 2, 64x48 (latents 8x6), two timesteps,
    conditioning_scale 0.7. Also: unet_controlnet.onnx with zero residuals == the base folder's unet.onnx."""
    rng = np.random.default_rng(0)
    inputs = dict(sample=rng.standard_normal((2, 4, 6, 8)).astype(np.float32), timestep=np.array([499, 259], np.int64),
                  encoder_hidden_states=rng.standard_normal((2, 77, export_models.TINY_TEXT_HIDDEN)).astype(np.float32))
    cond = rng.random((2, 3, 48, 64)).astype(np.float32)
    err, res_mag, n = gc.check_controlnet_onnx(os.path.join(ROOT, "models", MODEL),
                                               os.path.join(ROOT, "models", BASE, "unet.onnx"),
                                               mods[MODEL]["controlnet"], mods[MODEL]["unet"], inputs, {}, cond)
    print(f"ONNX vs diffusers (batch 2, 64x48, t [499, 259], conditioning_scale 0.7, {n} down residuals + mid):")
    print(f"  controlnet.onnx residuals          max |d| {err['controlnet_max_abs']:.2e}  "
          f"(max |residual| {res_mag:.3f})")
    print(f"  unet_controlnet.onnx (torch res.)  max |d| {err['unet_controlnet_max_abs']:.2e}")
    print(f"  controlnet.onnx -> unet_controlnet.onnx vs torch chain  max |d| {err['chain_max_abs']:.2e}")
    print(f"  unet_controlnet.onnx, zero residuals, vs {BASE}/unet.onnx  max |d| "
          f"{err['zero_residuals_vs_unet_max_abs']:.2e}")
    print(f"  the residuals' effect on the UNet output: max |d| {err['residual_effect_max_abs']:.3f} "
          "(vs no ControlNet)")
    return err


def pipeline(mode, mods):
    common = dict(vae=mods[BASE]["vae"], text_encoder=mods["text_encoder"],
                  tokenizer=clip_vocab.sd1_tokenizer(pad_token="<|endoftext|>"), unet=mods[MODEL]["unet"],
                  controlnet=mods[MODEL]["controlnet"], scheduler=LCMScheduler(), safety_checker=None,
                  feature_extractor=None, requires_safety_checker=False)
    cls = StableDiffusionControlNetPipeline if mode == "txt2img" else StableDiffusionControlNetImg2ImgPipeline
    pipe = cls(**common)
    pipe.set_progress_bar_config(disable=True)
    if mode == "img2img":
        gc.use_lcm_img2img_rule(pipe)
    return pipe


def main():
    os.makedirs(OUT, exist_ok=True)
    mods = export_models.tiny_modules()
    onnx_check = check_against_onnx(mods)
    i2i_mod.retrieve_latents = gc.retrieve_mean
    astronaut = Image.open(gc.ASTRONAUT).convert("RGB")
    manifest = []
    poses = {}
    for case in CASES:
        name, mode, prompt, steps, strength, guidance, cn_scale, (w, h), seed = case
        control_file, control = gc.pose_image(OUT, poses, w, h)
        pipe = pipeline(mode, mods)
        noise, kwargs, queue = gc.controlnet_case(OUT, case, control, astronaut)
        seen = {"latents": [], "decoded": [], "cond": [], "cn_scale": []}
        result = gc.run_recorded(pipe, kwargs, queue, (t2i_mod, i2i_mod, scheduling_lcm), seen,
                                 controlnet=gc.controlnet_hook(seen))
        timesteps_run = [int(t) for t in pipe.scheduler.timesteps]
        gc.check_controlnet_inputs(case, control, seen, timesteps_run)
        output = gc.save_case(OUT, name, noise, result, seen, png=True)
        manifest.append({"name": name, "model": MODEL, "mode": mode, "pipeline": type(pipe).__name__,
                         "prompt": prompt, "steps": steps, "strength": strength, "guidance": guidance,
                         "controlnet_scale": cn_scale, "timesteps": None, "width": w, "height": h,
                         "control": control_file, "timesteps_run": timesteps_run})
        print(f"{name}: {type(pipe).__name__}, timesteps {timesteps_run}, scale {cn_scale}, guidance {guidance}, "
              f"output mean {output.mean():.4f}", flush=True)

    gc.controlnet_pose_effect(poses, lambda mode: pipeline(mode, mods), (t2i_mod, i2i_mod, scheduling_lcm))

    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "scripts/golden/controlnet.py", "diffusers": __import__("diffusers").__version__,
                   "onnx_vs_diffusers": onnx_check, "cases": manifest}, f, indent=1)


if __name__ == "__main__":
    main()
