#!/usr/bin/env python3
"""Golden files for the SDXL family: tests/golden/sdxl/*, from diffusers' own SDXL pipelines (DESIGN §7).

The tiny SDXL torch modules are rebuilt exactly as `scripts/export_models.py tiny-sdxl` built the committed ONNX
files (export_models.tiny_sdxl_modules(): same seed, same order; checked below against the ONNX files, the optimum
folder's included, with onnxruntime), then run through
  - StableDiffusionXLImg2ImgPipeline with LCMScheduler (what AutoPipelineForImage2Image picks for SDXL + LCM-LoRA,
    SDXL-Turbo and LCM-SDXL; the last one's `timestep_cond` guidance embedding is the pipeline's own), given the
    LCM img2img rule's timesteps explicitly with strength 1 (the pipeline would otherwise apply the plain SD rule,
    DESIGN §7), with classifier-free guidance when guidance > 1: a negative prompt is encoded, none means zeros
    (force_zeros_for_empty_prompt, as SDXL base and Turbo);
  - StableDiffusionXLPipeline (txt2img) for one case. latentcam has no SDXL txt2img entry point (its txt2img is the
    pose-guided SD1.5 path); its nearest is img2img at strength 1 (`img2img_strength1`, timestep 999: 6.8 % of the
    image's latent survives the noising). The txt2img golden checks the UNet loop from pure noise: the Rust test
    feeds Diffusion::denoise zero latents and the noise divided by sqrt(1 - alpha_bar(999)).
with the substitutions of scripts/golden/img2img.py (golden_common.py) so the result is deterministic and
reproducible from Rust:
  - the VAE encoding is the distribution's mean (latentcam's exported encoders output the mean; an optimum
    encoder's `latent_parameters` are sliced to it), and
  - diffusers' randn_tensor hands out noise tensors saved beside the output (initial noise, then re-noising).
Each case stores its input image (PNG), noise, the scaled latents after encoding, the decoder's output before
clamping and the final image (float, 0..1, after diffusers' postprocessing) as .npy, and the parameters in
cases.json. Besides, `embeddings` in cases.json lists prompts whose prompt_embeds [1,77,24], pooled_prompt_embeds
[1,16] (encode_prompt) and add_time_ids (_get_add_time_ids) are stored as embeds_<i>_context.npy,
embeds_<i>_pooled.npy and in the JSON.

Run: .venv-scripts/bin/python scripts/golden/sdxl.py   (scripts/pyenv.sh makes the venv; needs the committed tiny
SDXL models: scripts/export_models.py tiny-sdxl)
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
import export_models  # noqa: E402
import golden_common as gc  # noqa: E402
from diffusers import LCMScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline  # noqa: E402
from diffusers.pipelines.stable_diffusion_xl import pipeline_stable_diffusion_xl as xl_mod  # noqa: E402
from diffusers.pipelines.stable_diffusion_xl import pipeline_stable_diffusion_xl_img2img as xl_i2i_mod  # noqa: E402
from diffusers.schedulers import scheduling_lcm  # noqa: E402

OUT = os.path.join(ROOT, "tests", "golden", "sdxl")

# name, model (the folder the Rust test loads), pipeline ("img2img" or "txt2img"), prompt, negative prompt (None:
# zeros under CFG), steps, strength, guidance, explicit timesteps, size (w, h)
CASES = [
    ("lcm_lora_1step", "tiny-sdxl-lcm-lora", "img2img", "a photo of an astronaut", None, 1, 0.5, 1.0, None, (64, 64)),
    ("lcm_lora_2steps", "tiny-sdxl-lcm-lora", "img2img", "a photo of an astronaut", None, 2, 0.5, 1.0, None,
     (64, 64)),
    ("lcm_lora_4steps", "tiny-sdxl-lcm-lora", "img2img", "an oil painting", None, 4, 0.7, 1.0, None, (64, 64)),
    # Non-square both ways: time_ids is [H, W, 0, 0, H, W].
    ("lcm_lora_64x48", "tiny-sdxl-lcm-lora", "img2img", "a watercolor", None, 2, 0.6, 1.0, None, (64, 48)),
    ("turbo_taesd_1step", "tiny-sdxl-turbo", "img2img", "a cat", None, 1, 0.5, 1.0, None, (48, 64)),
    ("lcm_sdxl_full_4steps", "tiny-lcm-sdxl", "img2img", "a portrait, studio light", None, 4, 0.6, 8.0, None,
     (64, 64)),
    ("cfg_negative", "tiny-sdxl-lcm-lora", "img2img", "a red car", "blurry, low quality", 2, 0.6, 1.5, None,
     (64, 64)),
    ("cfg_empty_negative", "tiny-sdxl-lcm-lora", "img2img", "a red car", None, 2, 0.6, 1.5, None, (64, 64)),
    ("img2img_strength1", "tiny-sdxl-lcm-lora", "img2img", "a castle on a hill", None, 2, 1.0, 1.0, None, (64, 64)),
    ("txt2img", "tiny-sdxl-lcm-lora", "txt2img", "a castle on a hill", None, 2, 1.0, 1.0, None, (64, 48)),
    # The optimum layout (scalar timestep, latent_parameters encoder): tiny-sdxl-lcm-lora's weights.
    ("optimum_cfg_explicit", "tiny-sdxl-optimum", "img2img", "a snowy forest", "people", None, None, 1.5,
     [799, 399], (64, 64)),
]

# Prompts whose embeddings are stored: plain; and one over 77 tokens with "!!" (tokenizer 2 pads with "!", which
# becomes a special token and splits "!!").
EMBED_PROMPTS = [
    "a photo of an astronaut riding a horse",
    "wow!! " + " ".join(["a very detailed painting of a lighthouse"] * 12) + " at dusk!!",
]
EMBED_SIZE = (64, 48)  # (w, h) for add_time_ids


def torch_model(model):
    """The tiny model whose torch modules a folder holds (optimum folders hold another's weights)."""
    return export_models.OPTIMUM_TINY.get(model, model)


def check_against_onnx(mods):
    """The rebuilt torch modules must be the ones the committed ONNX files were exported from."""
    rng = np.random.default_rng(0)

    def close(what, got, want, tol=1e-4):
        err = float(np.abs(got - want).max())
        assert err < tol, f"{what}: torch module differs from the committed ONNX file by {err}"

    ids = np.full((1, 77), 49407, np.int64)
    ids[0, :4] = [49406, 320, 1125, 49407]
    for i, name in enumerate(["text_encoder", "text_encoder_2"]):
        sess = ort.InferenceSession(os.path.join(ROOT, "models", export_models.SDXL_TINY_CLIP, f"{name}.onnx"))
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input_ids": ids})))
        with torch.no_grad():
            out = mods[name](torch.from_numpy(ids), output_hidden_states=True)
        for j, h in enumerate(out.hidden_states):
            close(f"{name} hidden_states.{j}", got[f"hidden_states.{j}"], h.numpy())
        if i == 1:
            close(f"{name} text_embeds", got["text_embeds"], out.text_embeds.numpy())

    unets = [(name, os.path.join(ROOT, "models", name, "unet.onnx"), np.array([499.0], np.float32))
             for name in export_models.SDXL_TINY_MODELS]
    unets.append(("tiny-sdxl-optimum", os.path.join(ROOT, "models", "tiny-sdxl-optimum", "unet", "model.onnx"),
                  np.array(499.0, np.float32)))
    for folder, path, t in unets:
        unet = mods[torch_model(folder)]["unet"]
        sess = ort.InferenceSession(path)
        feeds = {"sample": rng.standard_normal((1, 4, 8, 6)).astype(np.float32), "timestep": t,
                 "encoder_hidden_states": rng.standard_normal((1, 77, 24)).astype(np.float32),
                 "text_embeds": rng.standard_normal((1, 16)).astype(np.float32),
                 "time_ids": np.array([[64, 48, 0, 0, 64, 48]], np.float32)}
        cond = None
        if unet.config.time_cond_proj_dim:
            cond = rng.standard_normal((1, unet.config.time_cond_proj_dim)).astype(np.float32)
            feeds["timestep_cond"] = cond
        got = sess.run(None, feeds)[0]
        with torch.no_grad():
            want = unet(torch.from_numpy(feeds["sample"]), torch.tensor([499]),
                        torch.from_numpy(feeds["encoder_hidden_states"]),
                        timestep_cond=None if cond is None else torch.from_numpy(cond),
                        added_cond_kwargs={"text_embeds": torch.from_numpy(feeds["text_embeds"]),
                                           "time_ids": torch.from_numpy(feeds["time_ids"])}).sample.numpy()
        close(f"{folder} unet", got, want)

    image = (rng.random((1, 3, 48, 64)) * 2 - 1).astype(np.float32)
    for folder in list(export_models.SDXL_TINY_MODELS) + ["tiny-sdxl-optimum"]:
        vae = mods[torch_model(folder)]["vae"]
        optimum = folder in export_models.OPTIMUM_TINY
        path = os.path.join(ROOT, "models", folder, *(["vae_encoder", "model.onnx"] if optimum
                                                      else ["vae_encoder.onnx"]))
        sess = ort.InferenceSession(path)
        taesd = not hasattr(vae.config, "scaling_factor") or vae.config.scaling_factor == 1.0
        x = image * 0.5 + 0.5 if taesd else image  # TAESD-style exports take 0..1
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0][:, :4]
        with torch.no_grad():
            want = gc.retrieve_mean(vae.encode(torch.from_numpy(image))).numpy()
        close(f"{folder} vae encoder", got, want)


def pipeline(kind, mods, model):
    cls = StableDiffusionXLPipeline if kind == "txt2img" else StableDiffusionXLImg2ImgPipeline
    return export_models.tiny_sdxl_pipeline(mods, torch_model(model), scheduler=LCMScheduler(), cls=cls)


def golden_embeddings(mods, manifest):
    pipe = export_models.tiny_sdxl_pipeline(mods, "tiny-sdxl-lcm-lora")
    w, h = EMBED_SIZE
    time_ids = pipe._get_add_time_ids((h, w), (0, 0), (h, w), dtype=torch.float32,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    for i, prompt in enumerate(EMBED_PROMPTS):
        with torch.no_grad():
            context, _, pooled, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False)
        np.save(os.path.join(OUT, f"embeds_{i}_context.npy"), context.numpy().astype(np.float32))
        np.save(os.path.join(OUT, f"embeds_{i}_pooled.npy"), pooled.numpy().astype(np.float32))
        manifest.append({"index": i, "prompt": prompt, "width": w, "height": h,
                         "time_ids": [float(v) for v in time_ids[0]]})
        print(f"embeds_{i}: context {tuple(context.shape)}, pooled {tuple(pooled.shape)}")


def main():
    os.makedirs(OUT, exist_ok=True)
    mods = export_models.tiny_sdxl_modules()
    check_against_onnx(mods)
    xl_i2i_mod.retrieve_latents = gc.retrieve_mean
    embeddings = []
    golden_embeddings(mods, embeddings)
    astronaut = Image.open(gc.ASTRONAUT).convert("RGB")
    rng = np.random.default_rng(42)
    manifest = []
    for name, model, kind, prompt, negative, steps, strength, guidance, timesteps, (w, h) in CASES:
        pipe = pipeline(kind, mods, model)
        run = timesteps if timesteps is not None else gc.lcm_rule(steps, strength)
        shape = (1, 4, h // 8, w // 8)
        noise = [rng.standard_normal(shape).astype(np.float32) for _ in range(len(run))]
        kwargs = dict(prompt=prompt, negative_prompt=negative, guidance_scale=guidance, timesteps=run,
                      output_type="np")
        if kind == "txt2img":
            kwargs.update(height=h, width=w)
        else:
            kwargs.update(image=gc.input_image(OUT, name, astronaut, w, h), strength=1.0)
        seen = {"latents": [], "decoded": []}
        result = gc.run_recorded(pipe, kwargs, gc.NoiseQueue(noise), (xl_mod, xl_i2i_mod, scheduling_lcm), seen)
        ran = [int(t) for t in pipe.scheduler.timesteps]
        assert ran == run, f"{name}: the pipeline ran {ran}, not {run}"
        output = gc.save_case(OUT, name, noise, result, seen)
        manifest.append({"name": name, "model": model, "torch_model": torch_model(model), "kind": kind,
                         "pipeline": type(pipe).__name__, "prompt": prompt, "negative_prompt": negative,
                         "steps": steps, "strength": strength, "guidance": guidance, "timesteps": timesteps,
                         "width": w, "height": h, "timesteps_run": ran})
        print(f"{name}: {type(pipe).__name__} on {torch_model(model)}, timesteps {ran}, output mean "
              f"{output.mean():.4f}")
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "scripts/golden/sdxl.py", "diffusers": __import__("diffusers").__version__,
                   "cases": manifest, "embeddings": embeddings}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
