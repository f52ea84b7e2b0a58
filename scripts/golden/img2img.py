#!/usr/bin/env python3
"""Golden files for the whole img2img path: tests/golden/img2img/*, from diffusers' own pipelines.

The tiny models' torch modules are rebuilt exactly as scripts/export_models.py built the committed ONNX files
(same seed, same order; checked below against the ONNX files with onnxruntime), then run through
  - LatentConsistencyModelImg2ImgPipeline for full LCM models (`timestep_cond`; LCM img2img rule), and
  - StableDiffusionImg2ImgPipeline with LCMScheduler for the others (LCM-LoRA, SD-Turbo: what diffusers'
    AutoPipelineForImage2Image picks), given the LCM img2img rule's timesteps explicitly (that pipeline would
    otherwise apply the plain SD rule), with classifier-free guidance when guidance > 1.
with two deliberate substitutions so the result is deterministic and reproducible from Rust (golden_common.py):
  - the VAE encoding is the distribution's mean (latentcam's exported encoders output the mean), and
  - diffusers' randn_tensor hands out noise tensors saved beside the output (initial noise, then re-noising).
Each case stores its input image (PNG), noise, the scaled latents after encoding, the decoder's output before
clamping and the final image (float, 0..1, after diffusers' postprocessing) as .npy, and the parameters in
cases.json.

Run: .venv-scripts/bin/python scripts/golden/img2img.py   (scripts/pyenv.sh makes the venv)
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, HERE)
import clip_vocab  # noqa: E402
import export_models  # noqa: E402
import golden_common as gc  # noqa: E402
from diffusers import LCMScheduler, LatentConsistencyModelImg2ImgPipeline, StableDiffusionImg2ImgPipeline  # noqa: E402
from diffusers.pipelines.latent_consistency_models import pipeline_latent_consistency_img2img as lcm_mod  # noqa: E402
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as sd_mod  # noqa: E402
from diffusers.schedulers import scheduling_lcm  # noqa: E402

OUT = os.path.join(ROOT, "tests", "golden", "img2img")

CASES = [
    # name, model, pipeline, prompt, steps, strength, guidance, timesteps, size (w, h)
    ("sd15_lcm_2steps", "tiny-sd15-lcm-lora", "sd", "a photo of an astronaut", 2, 0.5, 1.0, None, (64, 64)),
    ("dreamshaper_3steps_w2", "tiny-lcm-dreamshaper", "lcm", "oil painting", 3, 0.7, 2.0, None, (64, 48)),
    ("turbo_taesd_1step", "tiny-sd-turbo", "sd", "a cat", 1, 0.6, 1.0, None, (48, 64)),
    ("sd15_cfg_explicit", "tiny-sd15-lcm-lora", "sd", "a watercolor", None, None, 1.8, [599, 299], (64, 64)),
]


def check_against_onnx(mods):
    """The rebuilt torch modules must be the ones the committed ONNX files were exported from."""
    rng = np.random.default_rng(0)
    for name, (_, vae_kind, ts_kind, cond_dim, _, _) in export_models.TINY_MODELS.items():
        unet = mods[name]["unet"]
        sess = ort.InferenceSession(os.path.join(ROOT, "models", name, "unet.onnx"))
        sample = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
        ehs = rng.standard_normal((1, 77, export_models.TINY_TEXT_HIDDEN)).astype(np.float32)
        feeds = {"sample": sample, "encoder_hidden_states": ehs}
        t = {"int64-batch": np.array([499], np.int64), "float32-batch": np.array([499.0], np.float32),
             "float32-scalar": np.array(499.0, np.float32)}[ts_kind]
        feeds["timestep"] = t
        cond = None
        if cond_dim:
            cond = rng.standard_normal((1, cond_dim)).astype(np.float32)
            feeds["timestep_cond"] = cond
        got = sess.run(None, feeds)[0]
        with torch.no_grad():
            want = unet(torch.from_numpy(sample), torch.tensor([499]), torch.from_numpy(ehs),
                        timestep_cond=None if cond is None else torch.from_numpy(cond)).sample.numpy()
        err = np.abs(got - want).max()
        assert err < 1e-4, f"{name}: torch module differs from committed unet.onnx by {err}"


def pipeline(kind, mods, model):
    tokenizer = clip_vocab.sd1_tokenizer(pad_token="!" if model == "tiny-sd-turbo" else "<|endoftext|>")
    common = dict(vae=mods[model]["vae"], text_encoder=mods["text_encoder"], tokenizer=tokenizer,
                  unet=mods[model]["unet"], scheduler=LCMScheduler(), safety_checker=None, feature_extractor=None,
                  requires_safety_checker=False)
    cls = LatentConsistencyModelImg2ImgPipeline if kind == "lcm" else StableDiffusionImg2ImgPipeline
    pipe = cls(**common)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main():
    os.makedirs(OUT, exist_ok=True)
    mods = export_models.tiny_modules()
    check_against_onnx(mods)
    lcm_mod.retrieve_latents = gc.retrieve_mean
    sd_mod.retrieve_latents = gc.retrieve_mean
    astronaut = Image.open(gc.ASTRONAUT).convert("RGB")
    rng = np.random.default_rng(42)
    manifest = []
    for name, model, kind, prompt, steps, strength, guidance, timesteps, (w, h) in CASES:
        image = gc.input_image(OUT, name, astronaut, w, h)
        pipe = pipeline(kind, mods, model)
        n_noise = steps if timesteps is None else len(timesteps)
        shape = (1, 4, h // 8, w // 8)
        noise = [rng.standard_normal(shape).astype(np.float32) for _ in range(n_noise)]
        kwargs = dict(prompt=prompt, image=image, guidance_scale=guidance, output_type="np")
        if kind == "lcm":
            kwargs.update(num_inference_steps=steps, strength=strength)
        elif timesteps is None:  # the LCM img2img rule's timesteps, given explicitly
            kwargs.update(timesteps=gc.lcm_rule(steps, strength), strength=1.0)
        else:
            kwargs.update(timesteps=timesteps, strength=1.0)
        seen = {"latents": [], "decoded": []}
        result = gc.run_recorded(pipe, kwargs, gc.NoiseQueue(noise), (lcm_mod, sd_mod, scheduling_lcm), seen)
        output = gc.save_case(OUT, name, noise, result, seen)
        manifest.append({"name": name, "model": model, "pipeline": type(pipe).__name__, "prompt": prompt,
                         "steps": steps, "strength": strength, "guidance": guidance, "timesteps": timesteps,
                         "width": w, "height": h, "timesteps_run": [int(t) for t in pipe.scheduler.timesteps]})
        print(f"{name}: {type(pipe).__name__}, timesteps {manifest[-1]['timesteps_run']}, output mean "
              f"{output.mean():.4f}")
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "scripts/golden/img2img.py", "diffusers": __import__("diffusers").__version__,
                   "cases": manifest}, f, indent=1)


if __name__ == "__main__":
    main()
