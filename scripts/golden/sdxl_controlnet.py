#!/usr/bin/env python3
"""Golden files for pose on SDXL: tests/golden/sdxl_controlnet/*, from diffusers' SDXL ControlNet pipelines.

Model: models/tiny-sdxl-controlnet = tiny-sdxl-lcm-lora (UNet, SDXL VAE, both text encoders referenced) + a tiny
random SDXL ControlNet (controlnet.onnx: ControlNetModel.from_unet of that UNet, seed 201, random zero convolutions)
+ the same UNet taking its residuals (unet_controlnet.onnx). Both take `text_embeds` and `time_ids` (the UNet's
added conditioning; diffusers hands the ControlNet the UNet's added_cond_kwargs, asserted below). The torch modules
are rebuilt as scripts/export_models.py tiny-sdxl-extra built the ONNX files and checked against them first.

The cases are scripts/golden/controlnet.py's (SD1.5; golden_common.CONTROLNET_CASES: same names, prompts, sizes,
scales and the same skeleton drawing), all with LCMScheduler (tiny-sdxl-lcm-lora's scheduler kind):
  - mode "txt2img": StableDiffusionXLControlNetPipeline from pure noise: LCM timesteps for num_inference_steps
    (2 steps -> [999, 499]); latents = noise[0] (LCMScheduler's init_noise_sigma is 1; passed as `latents=`).
  - mode "img2img": StableDiffusionXLControlNetImg2ImgPipeline; its get_timesteps (the plain SD rule) is replaced by
    the LCM img2img rule latentcam implements (LCMScheduler.set_timesteps(steps, strength=s): 2 steps at 0.6 ->
    [599, 299]); initial latents add_noise(vae_mean(image) * 0.13025, noise[0], t0).
  Between steps the LCM step re-noises with noise[1], ... With guidance > 1 the UNet AND the ControlNet run on batch 2
  ([uncond, cond]; no negative prompt: zeros, force_zeros_for_empty_prompt), the control image duplicated, both
  with the same text_embeds / time_ids. controlnet_cond = png / 255 (RGB 0..1, NCHW; asserted).
Per case: NAME_noise.npy, NAME_decoded.npy, NAME_output.npy, NAME_output.png, NAME_denoised.npy (the loop's final
latents, scaled, before decoding); img2img also NAME_input.png and NAME_latents.npy. Control images: pose_WxH.png.

Run: .venv-scripts/bin/python scripts/golden/sdxl_controlnet.py   (needs the tiny SDXL models: scripts/export_models.py
tiny-sdxl, then tiny-sdxl-extra)
"""
import json
import os
import sys
import time

import numpy as np
import torch
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
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetPipeline,
)
from diffusers.pipelines.controlnet import pipeline_controlnet_sd_xl as t2i_mod  # noqa: E402
from diffusers.pipelines.controlnet import pipeline_controlnet_sd_xl_img2img as i2i_mod  # noqa: E402
from diffusers.schedulers import scheduling_lcm  # noqa: E402

OUT = os.path.join(ROOT, "tests", "golden", "sdxl_controlnet")
MODEL = "tiny-sdxl-controlnet"
BASE = export_models.SDXL_TINY_CONTROLNETS[MODEL]["base"]
# name, mode, prompt, steps, strength, guidance, controlnet scale, size (w, h), noise seed
CASES = gc.CONTROLNET_CASES


def check_against_onnx(mods):
    """controlnet.onnx + unet_controlnet.onnx against diffusers' modules on one random input (batch 2, 64x48,
    timesteps [999, 499], conditioning_scale 0.7); unet_controlnet.onnx with zero residuals == the base's unet.onnx."""
    rng = np.random.default_rng(0)
    inputs = dict(sample=rng.standard_normal((2, 4, 6, 8)).astype(np.float32),
                  timestep=np.array([999, 499], np.float32),
                  encoder_hidden_states=rng.standard_normal((2, 77, 24)).astype(np.float32))
    added = dict(text_embeds=rng.standard_normal((2, 16)).astype(np.float32),
                 time_ids=np.array([[48, 64, 0, 0, 48, 64]] * 2, np.float32))
    cond = rng.random((2, 3, 48, 64)).astype(np.float32)
    err, res_mag, n = gc.check_controlnet_onnx(os.path.join(ROOT, "models", MODEL),
                                               os.path.join(ROOT, "models", BASE, "unet.onnx"),
                                               mods[MODEL]["controlnet"], mods[MODEL]["unet"], inputs, added, cond)
    print(f"ONNX vs diffusers (batch 2, 64x48, t [999, 499], conditioning_scale 0.7, {n} down residuals + mid):")
    print(f"  controlnet.onnx residuals {err['controlnet_max_abs']:.2e} (max |residual| {res_mag:.1f}); "
          f"unet_controlnet.onnx {err['unet_controlnet_max_abs']:.2e}; chained {err['chain_max_abs']:.2e}; "
          f"zero residuals vs {BASE}/unet.onnx {err['zero_residuals_vs_unet_max_abs']:.2e}; residuals' effect on "
          f"the UNet output {err['residual_effect_max_abs']:.3f}")
    return dict(err, residual_max_abs=res_mag, residuals=n + 1)


def pipeline(mode, mods):
    cls = StableDiffusionXLControlNetPipeline if mode == "txt2img" else StableDiffusionXLControlNetImg2ImgPipeline
    pipe = cls(vae=mods[MODEL]["vae"], text_encoder=mods["text_encoder"], text_encoder_2=mods["text_encoder_2"],
               tokenizer=clip_vocab.sd1_tokenizer(pad_token="<|endoftext|>"),
               tokenizer_2=clip_vocab.sd1_tokenizer(pad_token="!"), unet=mods[MODEL]["unet"],
               controlnet=mods[MODEL]["controlnet"], scheduler=LCMScheduler(), force_zeros_for_empty_prompt=True,
               add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    if mode == "img2img":
        gc.use_lcm_img2img_rule(pipe)
    return pipe


def main():
    t0 = time.time()
    os.makedirs(OUT, exist_ok=True)
    mods = export_models.tiny_sdxl_extra_modules()
    onnx_check = check_against_onnx(mods)
    i2i_mod.retrieve_latents = gc.retrieve_mean
    astronaut = Image.open(gc.ASTRONAUT).convert("RGB")
    manifest, poses = [], {}
    for case in CASES:
        name, mode, prompt, steps, strength, guidance, cn_scale, (w, h), seed = case
        control_file, control = gc.pose_image(OUT, poses, w, h)
        pipe = pipeline(mode, mods)
        noise, kwargs, queue = gc.controlnet_case(OUT, case, control, astronaut)
        seen = {k: [] for k in ("latents", "decoded", "denoised", "cond", "cn_scale", "cn_added", "unet_added")}
        result = gc.run_recorded(pipe, kwargs, queue, (t2i_mod, i2i_mod, scheduling_lcm), seen,
                                 controlnet=gc.controlnet_hook(seen),
                                 unet=lambda *a, **k: seen["unet_added"].append(k["added_cond_kwargs"]))
        timesteps_run = [int(t) for t in pipe.scheduler.timesteps]
        batch = gc.check_controlnet_inputs(case, control, seen, timesteps_run)

        # Besides (SDXL): the ControlNet's text_embeds / time_ids exactly the UNet's ([H, W, 0, 0, H, W]; zeros for
        # the uncond half).
        for c_added, u_added in zip(seen["cn_added"], seen["unet_added"]):
            for key in ("text_embeds", "time_ids"):
                assert torch.equal(c_added[key], u_added[key]), f"{name}: ControlNet {key} is not the UNet's"
        time_ids = seen["unet_added"][0]["time_ids"][0].tolist()
        assert time_ids == [h, w, 0, 0, h, w], (name, time_ids)
        if batch == 2:
            assert not seen["unet_added"][0]["text_embeds"][0].any(), "uncond pooled embedding is not zeros"

        output = gc.save_case(OUT, name, noise, result, seen, png=True)
        manifest.append({"name": name, "model": MODEL, "mode": mode, "pipeline": type(pipe).__name__,
                         "scheduler": "lcm", "prompt": prompt, "negative_prompt": None, "steps": steps,
                         "strength": strength, "guidance": guidance, "controlnet_scale": cn_scale, "timesteps": None,
                         "width": w, "height": h, "control": control_file, "time_ids": time_ids,
                         "timesteps_run": timesteps_run})
        print(f"{name}: {type(pipe).__name__}, timesteps {timesteps_run}, scale {cn_scale}, guidance {guidance}, "
              f"output mean {output.mean():.4f}", flush=True)

    pose_effect = gc.controlnet_pose_effect(poses, lambda mode: pipeline(mode, mods),
                                            (t2i_mod, i2i_mod, scheduling_lcm))

    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "scripts/golden/sdxl_controlnet.py", "diffusers": __import__("diffusers").__version__,
                   "onnx_vs_diffusers": onnx_check, "pose_effect_mean_abs": pose_effect, "cases": manifest}, f,
                  indent=1)
        f.write("\n")
    print(f"sdxl_controlnet goldens: {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
