#!/usr/bin/env python3
"""Golden files for latent blending with a mask on a 4-channel UNet: tests/golden/inpaint/*, from diffusers' own
inpainting pipelines (DESIGN §8, issue 21 item 2).

Models: the tiny SD1.5 twin tiny-sd15-lcm-lora (torch modules rebuilt by export_models.tiny_modules(), exactly as
scripts/golden/img2img.py does) through StableDiffusionInpaintPipeline, and the tiny SDXL twin tiny-sdxl-lcm-lora
(export_models.tiny_sdxl_modules(), as scripts/golden/sdxl.py) through StableDiffusionXLInpaintPipeline; both
with LCMScheduler. Both UNets take 4 channels, so diffusers runs the plain loop and blends the image back in after
every step (the `num_channels_unet == 4` branch of both pipelines); the rebuilt modules are checked against the
committed ONNX files first (img2img.check_against_onnx, sdxl.check_against_onnx).

The substitutions of the other goldens (golden_common.py), so the result is reproducible from Rust:
  - the VAE encoding is the distribution's mean: gc.retrieve_mean replaces the inpaint modules' retrieve_latents;
  - all noise comes from stored tensors: a gc.NoiseQueue replaces randn_tensor in the inpaint module and in
    scheduling_lcm. Draw order: noise[0] = prepare_latents' initial noise, then noise[1..] = the LCM step's
    re-noising draw after every step but the last (steps tensors in all).
and one patch to get latentcam's timesteps:
  - pipe.get_timesteps (the plain SD rule: init_timestep = int(steps * strength), t_start = steps - init_timestep,
    which at 2 steps and 0.5 would run only [499]) is replaced by the LCM img2img rule latentcam implements
    (src/diffusion/scheduler.rs `timesteps()`): scheduler.set_timesteps(steps, strength=strength) and its
    timesteps, all of them. The call is pipe(num_inference_steps=steps, strength=strength) with no `timesteps=`:
    retrieve_timesteps first runs set_timesteps(steps) (strength 1), the patch then re-runs it with the strength.
    The scheduler's own step index stays consistent (set_timesteps resets it; LCMScheduler.step finds it from the
    timestep). `strength` reaches the pipeline unchanged, so its `is_strength_max = strength == 1.0` holds exactly
    at strength 1: the pure-noise start. The SDXL pipeline's get_timesteps also takes denoising_start (always None
    here). At strength 1 the patch gives what the unpatched pipeline gives ([999, 499] at 2 steps).
Nothing else is patched: the mask handling, the initial latents and the blend are diffusers' own code.

What diffusers does (diffusers 0.42.1, both pipelines alike; cases.json "rule" says it for the Rust side):
  mask: mask_processor = VaeImageProcessor(do_normalize=False, do_binarize=True, do_convert_grayscale=True):
    the PIL mask (resized to height x width with PIL Lanczos if its size differs: not here) -> convert("L") ->
    float32 / 255 -> binarize (< 0.5 -> 0, >= 0.5 -> 1, i.e. 8-bit gray >= 128 -> 1) -> prepare_mask_latents:
    torch.nn.functional.interpolate(mask, size=(H/8, W/8)) with the default mode "nearest" (source index
    floor(dst * in/out) = 8 * dst: the top-left pixel of each 8x8 block). m is 0 or 1 only: a feathered mask's
    softness is lost.
  start: strength < 1: x = add_noise(x0, noise[0], t0) (x0 = the clean scaled image latents, as img2img);
    strength == 1: x = noise[0] * init_noise_sigma (1 for LCM): pure noise, the image plays no part in the first
    UNet input.
  after step i (LCM step: x -> prev = sqrt(ab[t_{i+1}]) * denoised + sqrt(1 - ab[t_{i+1}]) * noise[i + 1]):
    i < last: x = (1 - m) * add_noise(x0, noise[0], t_{i+1}) + m * prev   (the INITIAL noise, every step)
    i = last: x = (1 - m) * x0 + m * denoised
  decode: vae.decode(x / scaling_factor).

Per case: NAME_input.png (the image given), NAME_mask.png (the mask given: 8-bit gray, white = change),
NAME_mask_latent.npy [1,1,h,w] (the m diffusers blends with, recorded from prepare_mask_latents; under CFG the
first of its two copies), NAME_image_latents.npy [1,4,h,w] (x0, recorded from prepare_latents), NAME_noise.npy
[steps,1,4,h,w], NAME_steps.npy [steps,1,4,h,w] (x after each step's blend: the next UNet input, the last one the
final latents), NAME_steps_unblended.npy (the LCM step's output before blending), NAME_denoised.npy (the final
latents the VAE decodes, scaled), NAME_decoded.npy (decoder output before clamping, 0..1), NAME_output.npy (the
pipeline's image, [1,3,H,W] 0..1). The script re-derives the mask and every blend from these files with numpy and
asserts they match diffusers' tensors.

Run: .venv-scripts/bin/python scripts/golden/inpaint.py   (scripts/pyenv.sh makes the venv; needs the committed
tiny models, SD and SDXL)
"""
import json
import os
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, HERE)
import clip_vocab  # noqa: E402
import export_models  # noqa: E402
import golden_common as gc  # noqa: E402
import img2img  # noqa: E402
import sdxl  # noqa: E402
from diffusers import LCMScheduler, StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline  # noqa: E402
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_inpaint as sd_inpaint_mod  # noqa: E402
from diffusers.pipelines.stable_diffusion_xl import pipeline_stable_diffusion_xl_inpaint as xl_inpaint_mod  # noqa: E402
from diffusers.schedulers import scheduling_lcm  # noqa: E402

OUT = os.path.join(ROOT, "tests", "golden", "inpaint")
SIZE = (64, 64)  # (w, h)

# name, model, mask kind, prompt, steps, strength, guidance
CASES = [
    # img2img strengths, the LCM img2img rule: 0.5 -> [499] / [499, 259]; 0.6 -> [599, 299] / [599, 459, 299, 159]
    ("half_1step_s05", "tiny-sd15-lcm-lora", "half", "a photo of an astronaut", 1, 0.5, 1.0),
    ("half_2steps_s05", "tiny-sd15-lcm-lora", "half", "a photo of an astronaut", 2, 0.5, 1.0),
    ("person_2steps_s06", "tiny-sd15-lcm-lora", "person", "a painted room", 2, 0.6, 1.0),
    ("soft_4steps_s06", "tiny-sd15-lcm-lora", "soft", "an oil painting", 4, 0.6, 1.0),
    # strength 1: pure noise start; [999], [999, 499], [999, 759, 499, 259]
    ("half_1step_s1", "tiny-sd15-lcm-lora", "half", "a photo of an astronaut", 1, 1.0, 1.0),
    ("person_2steps_s1", "tiny-sd15-lcm-lora", "person", "a painted room", 2, 1.0, 1.0),
    ("soft_4steps_s1", "tiny-sd15-lcm-lora", "soft", "an oil painting", 4, 1.0, 1.0),
    # classifier-free guidance: UNet on batch 2, the mask duplicated by diffusers and its first copy blended
    ("person_2steps_cfg", "tiny-sd15-lcm-lora", "person", "a watercolor of a library", 2, 0.6, 1.8),
    # the SDXL twin: the same blend in StableDiffusionXLInpaintPipeline
    ("sdxl_person_2steps_s06", "tiny-sdxl-lcm-lora", "person", "a painted room", 2, 0.6, 1.0),
    ("sdxl_half_2steps_s1", "tiny-sdxl-lcm-lora", "half", "a photo of an astronaut", 2, 1.0, 1.0),
]

MASK_KINDS = {
    "half": "left half keep (0, black), right half change (255, white): x < W/2 is 0",
    "soft": "a feathered ellipse to change: centre (38, 30), radii (20, 16) px, linear ramp from 255 at normalised "
            "radius 0.5 to 0 at 1 (pixel centres), rounded to 8 bits; diffusers binarises it at 0.5",
    "person": "a person-like blob to keep (0: head ellipse, neck, shoulders and torso, drawn with PIL without "
              "anti-aliasing) on a background to change (255)",
}

RULE = {
    "mask_preprocess": "PIL mask -> convert('L') -> float32 / 255 -> binarize: value < 0.5 -> 0, >= 0.5 -> 1 "
                       "(8-bit gray >= 128 -> 1); diffusers' mask_processor (VaeImageProcessor do_normalize=False, "
                       "do_binarize=True, do_convert_grayscale=True); a mask of another size would first be resized "
                       "to HxW with PIL Lanczos (none here: masks are HxW)",
    "mask_resize": "torch.nn.functional.interpolate(mask, size=(H/8, W/8)), default mode 'nearest': "
                   "m[i, j] = mask[8 i, 8 j] (the top-left pixel of each 8x8 block), values 0 or 1 only",
    "mask_resize_method": "binarize-0.5-then-nearest-top-left",
    "initial_latents": "strength < 1: add_noise(x0, noise[0], t0) = sqrt(ab[t0]) x0 + sqrt(1 - ab[t0]) noise[0]; "
                       "strength == 1: noise[0] (pure noise, init_noise_sigma 1)",
    "blend_after_step_i": "i < last: x = (1 - m) * add_noise(x0, noise[0], t[i+1]) + m * lcm_step(x), "
                          "where lcm_step re-noises with noise[i+1]; i = last: x = (1 - m) * x0 + m * denoised",
    "noise": "noise[0]: the initial noise (also the blend's noise at every step); noise[k], k >= 1: the LCM step's "
             "re-noising after step k-1",
    "x0": "image_latents: VAE encoder mean * scaling_factor of the input image (the unmasked image; the masked image "
          "is also encoded by diffusers but unused with a 4-channel UNet)",
}


def draw_mask(kind, w, h):
    if kind == "half":
        a = np.zeros((h, w), np.uint8)
        a[:, w // 2:] = 255
        return Image.fromarray(a, "L")
    if kind == "soft":
        y, x = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
        d = np.sqrt(((x - 38.0) / 20.0) ** 2 + ((y - 30.0) / 16.0) ** 2)
        v = np.clip((1.0 - d) / 0.5, 0.0, 1.0)
        return Image.fromarray(np.round(v * 255.0).astype(np.uint8), "L")
    if kind == "person":
        im = Image.new("L", (w, h), 255)
        d = ImageDraw.Draw(im)
        d.ellipse([25, 7, 39, 25], fill=0)  # head
        d.rectangle([29, 23, 35, 31], fill=0)  # neck
        d.ellipse([13, 27, 51, 47], fill=0)  # shoulders
        d.polygon([(15, 37), (49, 37), (53, h - 1), (11, h - 1)], fill=0)  # torso
        return im
    raise ValueError(kind)


def mask_image(name, kind, w, h):
    """The case's mask, written as NAME_mask.png and read back: the pipeline gets exactly the committed pixels."""
    path = os.path.join(OUT, f"{name}_mask.png")
    draw_mask(kind, w, h).save(path)
    return Image.open(path)


def expected_mask_latent(mask):
    """The documented rule, independently of diffusers: gray >= 128 -> 1, then the top-left pixel of each 8x8."""
    a = np.asarray(mask.convert("L"), np.float32) / 255.0
    b = (a >= 0.5).astype(np.float32)
    return b[0::8, 0::8][None, None]


def use_lcm_img2img_rule(pipe):
    """pipe.get_timesteps -> the LCM img2img rule (module docstring). Takes the SDXL pipeline's denoising_start."""
    def lcm_img2img_timesteps(num_inference_steps, strength, device, denoising_start=None):
        assert denoising_start is None
        pipe.scheduler.set_timesteps(num_inference_steps=num_inference_steps, device=device, strength=strength)
        return pipe.scheduler.timesteps, len(pipe.scheduler.timesteps)

    pipe.get_timesteps = lcm_img2img_timesteps


def pipeline(mods, model):
    if model == "tiny-sd15-lcm-lora":
        pipe = StableDiffusionInpaintPipeline(
            vae=mods[model]["vae"], text_encoder=mods["text_encoder"],
            tokenizer=clip_vocab.sd1_tokenizer(pad_token="<|endoftext|>"), unet=mods[model]["unet"],
            scheduler=LCMScheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
    else:
        pipe = export_models.tiny_sdxl_pipeline(mods, model, scheduler=LCMScheduler(),
                                                cls=StableDiffusionXLInpaintPipeline)
    assert pipe.unet.config.in_channels == 4
    use_lcm_img2img_rule(pipe)
    return pipe


def record(pipe, rec):
    """Wraps the pipeline's prepare_latents / prepare_mask_latents and the scheduler's step on this instance to
    record (initial latents, noise, image latents), the latent mask and each step's unblended output."""
    prepare_latents, prepare_mask_latents, step = pipe.prepare_latents, pipe.prepare_mask_latents, pipe.scheduler.step

    def prepare_latents_rec(*a, **k):
        out = prepare_latents(*a, **k)
        rec["init"], rec["init_noise"], rec["image_latents"] = out
        return out

    def prepare_mask_latents_rec(*a, **k):
        out = prepare_mask_latents(*a, **k)
        rec["mask"] = out[0]
        return out

    def step_rec(*a, **k):
        out = step(*a, **k)
        rec["unblended"].append(out[0].clone())
        rec["lcm_denoised"].append(out[1].clone())
        return out

    pipe.prepare_latents, pipe.prepare_mask_latents, pipe.scheduler.step = (prepare_latents_rec,
                                                                            prepare_mask_latents_rec, step_rec)


def main():
    started = time.time()
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    sd_mods = export_models.tiny_modules()
    img2img.check_against_onnx(sd_mods)
    xl_mods = export_models.tiny_sdxl_modules()
    sdxl.check_against_onnx(xl_mods)
    sd_inpaint_mod.retrieve_latents = gc.retrieve_mean
    xl_inpaint_mod.retrieve_latents = gc.retrieve_mean
    astronaut = Image.open(gc.ASTRONAUT).convert("RGB")
    rng = np.random.default_rng(21)
    w, h = SIZE
    manifest = []
    for name, model, kind, prompt, steps, strength, guidance in CASES:
        sdxl_case = model.startswith("tiny-sdxl")
        pipe = pipeline(xl_mods if sdxl_case else sd_mods, model)
        run = gc.lcm_rule(steps, strength)
        shape = (1, 4, h // 8, w // 8)
        noise = [rng.standard_normal(shape).astype(np.float32) for _ in range(len(run))]
        image = gc.input_image(OUT, name, astronaut, w, h)
        mask = mask_image(name, kind, w, h)
        rec = {"unblended": [], "lcm_denoised": [], "steps": [], "unet_in": []}
        record(pipe, rec)

        def on_step_end(p, i, t, kw):
            rec["steps"].append(kw["latents"].clone())
            return {}

        kwargs = dict(prompt=prompt, image=image, mask_image=mask, num_inference_steps=steps, strength=strength,
                      guidance_scale=guidance, output_type="np", callback_on_step_end=on_step_end,
                      callback_on_step_end_tensor_inputs=["latents"])
        seen = {"latents": [], "decoded": [], "denoised": []}
        unet_hook = {"unet": lambda *a, **k: rec["unet_in"].append(a[0].clone())}
        mod = xl_inpaint_mod if sdxl_case else sd_inpaint_mod
        result = gc.run_recorded(pipe, kwargs, gc.NoiseQueue(noise), (mod, scheduling_lcm), seen, **unet_hook)
        ran = [int(t) for t in pipe.scheduler.timesteps]
        assert ran == run, f"{name}: the pipeline ran {ran}, not {run}"
        assert len(rec["steps"]) == len(run) == len(rec["unblended"]) == len(rec["unet_in"])

        # What diffusers blended with, and the independent checks of the rule stated in the docstring.
        m = rec["mask"][:1].numpy().astype(np.float32)
        assert rec["mask"].shape[0] == (2 if guidance > 1 else 1)
        assert np.array_equal(m, expected_mask_latent(mask)), f"{name}: mask rule differs from diffusers'"
        assert set(np.unique(m)) <= {0.0, 1.0}
        x0 = rec["image_latents"].numpy()
        assert np.array_equal(x0, seen["latents"][0].numpy()), f"{name}: image latents are not the first encode"
        assert np.array_equal(rec["init_noise"].numpy(), noise[0])
        ab = pipe.scheduler.alphas_cumprod.numpy()

        def add_noise(t):
            return np.sqrt(ab[t]) * x0 + np.sqrt(1.0 - ab[t]) * noise[0]

        first = rec["unet_in"][0][:1].numpy()
        want_first = noise[0] if strength == 1.0 else add_noise(run[0])
        err_first = float(np.abs(first - want_first).max())
        assert err_first < 1e-6, f"{name}: first UNet input differs from the rule by {err_first}"
        blend_err = 0.0
        for i in range(len(run)):
            unblended = rec["unblended"][i].numpy()
            if i < len(run) - 1:
                want = (1 - m) * add_noise(run[i + 1]) + m * unblended
                # the next UNet input is this step's blend (LCM's scale_model_input is the identity)
                assert np.array_equal(rec["unet_in"][i + 1][:1].numpy(), rec["steps"][i].numpy())
            else:
                want = (1 - m) * x0 + m * rec["lcm_denoised"][i].numpy()
                assert np.array_equal(unblended, rec["lcm_denoised"][i].numpy())
            blend_err = max(blend_err, float(np.abs(rec["steps"][i].numpy() - want).max()))
        assert blend_err < 1e-5, f"{name}: the blend differs from the rule by {blend_err}"
        final = seen["denoised"][-1].numpy()
        assert np.abs(final - rec["steps"][-1].numpy()).max() < 1e-5
        keep = m[0, 0] == 0
        assert np.array_equal(rec["steps"][-1].numpy()[..., keep], x0[..., keep]), f"{name}: kept area not x0"

        np.save(os.path.join(OUT, f"{name}_mask_latent.npy"), m)
        np.save(os.path.join(OUT, f"{name}_image_latents.npy"), x0.astype(np.float32))
        np.save(os.path.join(OUT, f"{name}_steps.npy"), np.stack([s.numpy().astype(np.float32) for s in rec["steps"]]))
        np.save(os.path.join(OUT, f"{name}_steps_unblended.npy"),
                np.stack([s.numpy().astype(np.float32) for s in rec["unblended"]]))
        seen["latents"] = []  # written above as NAME_image_latents.npy
        output = gc.save_case(OUT, name, noise, result, seen)
        grey = np.asarray(mask, np.uint8)[0::8, 0::8]
        manifest.append({
            "name": name, "model": model, "pipeline": type(pipe).__name__, "prompt": prompt, "negative_prompt": None,
            "steps": steps, "strength": strength, "guidance": guidance, "width": w, "height": h,
            "timesteps_run": ran, "mask_kind": kind, "mask_resize": RULE["mask_resize_method"],
            "first_unet_input": "noise[0]" if strength == 1.0 else "add_noise(image_latents, noise[0], t0)",
            "mask_latent_ones": int(m.sum()), "mask_latent_soft_samples": int(((grey > 0) & (grey < 255)).sum()),
            "first_input_max_abs": err_first, "blend_vs_rule_max_abs": blend_err})
        print(f"{name}: {type(pipe).__name__}, timesteps {ran}, mask {kind} ({int(m.sum())}/{m.size} change), "
              f"blend vs rule {blend_err:.1e}, output mean {output.mean():.4f}")
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "scripts/golden/inpaint.py", "diffusers": __import__("diffusers").__version__,
                   "rule": RULE, "mask_kinds": MASK_KINDS, "cases": manifest}, f, indent=1)
        f.write("\n")
    print(f"done in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
