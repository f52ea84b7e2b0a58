#!/usr/bin/env python3
"""Golden files for the 9-channel inpainting UNet: tests/golden/inpaint9/*, from diffusers' own
StableDiffusionInpaintPipeline (DESIGN §8, issue 21 item 3).

Model: the tiny twin tiny-sd15-inpainting-lcm-lora (mimics runwayml/stable-diffusion-inpainting + LCM-LoRA): its
9-channel UNet rebuilt by export_models.tiny_inpaint_modules() (own seed), the VAE and text encoder of
tiny-sd15-lcm-lora (export_models.tiny_modules(), as scripts/golden/img2img.py), with LCMScheduler. The rebuilt
UNet is checked against the committed unet.onnx first (and img2img.check_against_onnx checks the rest).

The substitutions of scripts/golden/inpaint.py (golden_common.py), so the result is reproducible from Rust:
  - the VAE encoding is the distribution's mean: gc.retrieve_mean replaces the inpaint module's retrieve_latents
    (both encodings: the masked image and, at strength < 1, the whole image);
  - all noise comes from stored tensors: a gc.NoiseQueue replaces randn_tensor in the inpaint module and in
    scheduling_lcm. Draw order: noise[0] = prepare_latents' initial noise, then noise[1..] = the LCM step's
    re-noising draw after every step but the last (steps tensors in all);
  - pipe.get_timesteps is replaced by the LCM img2img rule latentcam implements (inpaint.use_lcm_img2img_rule:
    scheduler.set_timesteps(steps, strength=strength), all of them); at strength 1 it gives what the unpatched
    pipeline gives ([999], [999, 499], [999, 759, 499, 259]); 2 steps at 0.5 -> [499, 259].
Nothing else is patched: the mask handling, the masked image, the concat and the loop are diffusers' own code.

What diffusers does with a 9-channel UNet (checked in diffusers 0.42.1's pipeline_stable_diffusion_inpaint.py,
`num_channels_unet == 9`; cases.json "rule" says it for the Rust side):
  image: image_processor.preprocess: RGB / 255 * 2 - 1 (-1..1), NCHW.
  mask: mask_processor (do_normalize=False, do_binarize=True, do_convert_grayscale=True): convert("L") / 255, then
    < 0.5 -> 0, >= 0.5 -> 1 (8-bit gray >= 128 -> 1) = mask_condition [1,1,H,W].
  masked image: init_image * (mask_condition < 0.5), in -1..1: kept pixels (mask 0) as they are, pixels to change
    (mask 1) exactly 0.0, i.e. mid-grey (0.5 in 0..1; not black). It is encoded by the VAE (mean) and multiplied by
    scaling_factor: masked_image_latents [1,4,h,w].
  mask at latent size: prepare_mask_latents: interpolate(mask_condition, size=(H/8, W/8)), mode "nearest":
    m[i, j] = mask_condition[8 i, 8 j] (the top-left pixel of each 8x8 block), 0 or 1 only.
  start: strength == 1 (is_strength_max): x = noise[0] (init_noise_sigma 1); the whole image is not encoded.
    strength < 1: x = add_noise(x0, noise[0], t0), x0 = scaling_factor * VAE mean of the WHOLE image (unmasked).
  each step: UNet sample = concat([x, m, masked_image_latents], channel axis) = [1, 9, h, w] (4 + 1 + 4; LCM's
    scale_model_input is the identity). Under classifier-free guidance (guidance > 1: LCM-LoRA has no
    time_cond_proj_dim) diffusers duplicates all three (torch.cat([latents] * 2), and [mask] * 2, [masked] * 2 in
    prepare_mask_latents), so both batch rows have the same 9 channels; encoder_hidden_states = [uncond (""),
    cond]; eps = eps_u + guidance * (eps_c - eps_u). Then the LCM step (no blending of any kind).
  end: no paste-back: the last LCM step's denoised latents are decoded as they are (vae.decode(x / scale)); the
    pipeline's only overlay is for padding_mask_crop (not used).

Per case: NAME_input.png (the image, 8-bit RGB), NAME_mask.png (the mask given: 8-bit gray, white = change),
NAME_mask_latent.npy [1,1,h,w] (m, one copy), NAME_masked_image_latents.npy [1,4,h,w] (scaled, one copy),
NAME_image_latents.npy [1,4,h,w] (x0, strength < 1 only), NAME_noise.npy [steps,1,4,h,w], NAME_unet_in_0.npy
[1,9,h,w] (the first UNet `sample`, one row of the CFG batch), NAME_eps.npy [steps,1,4,h,w] (the guided noise
prediction each step), NAME_steps.npy [steps,1,4,h,w] (x after each LCM step: the next UNet input's first 4
channels; the last one the final latents), NAME_denoised.npy [1,4,h,w] (the latents decoded, scaled),
NAME_decoded.npy [1,3,H,W] (decoder output before clamping, in 0..1), NAME_output.npy [1,3,H,W] (the pipeline's
image, 0..1). The script re-derives the masked image, the mask, the masked image latents (ONNX VAE encoder) and
every UNet input from these files with numpy and asserts they match diffusers' tensors; then it replays every case
with the committed ONNX files only (text encoder, UNet, VAE; numpy LCM step) and compares with diffusers' output.

Run: .venv-scripts/bin/python scripts/golden/inpaint9.py   (needs the committed tiny models: tiny-clip,
tiny-sd15-lcm-lora, tiny-sd15-inpainting-lcm-lora)
"""
import json
import math
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
import img2img  # noqa: E402
import inpaint  # noqa: E402
from diffusers import LCMScheduler, StableDiffusionInpaintPipeline  # noqa: E402
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_inpaint as sd_inpaint_mod  # noqa: E402
from diffusers.schedulers import scheduling_lcm  # noqa: E402

OUT = os.path.join(ROOT, "tests", "golden", "inpaint9")
MODEL = "tiny-sd15-inpainting-lcm-lora"
BASE = export_models.TINY_INPAINT[MODEL]["base"]
SEED = 9

# name, mask kind (inpaint.MASK_KINDS), prompt, steps, strength, guidance, size (w, h)
CASES = [
    # the seed's recipe: 4 steps, guidance 4 (CFG, empty negative prompt), strength 1: [999, 759, 499, 259]
    ("person_4steps_g4", "person", "a painted room", 4, 1.0, 4.0, (64, 64)),
    ("soft_4steps_g4_64x48", "soft", "an oil painting", 4, 1.0, 4.0, (64, 48)),
    # no guidance, strength 1: [999] and [999, 499]
    ("half_1step", "half", "a photo of an astronaut", 1, 1.0, 1.0, (64, 64)),
    ("person_2steps", "person", "a painted room", 2, 1.0, 1.0, (64, 64)),
    # img2img with the 9-channel UNet, LCM img2img rule: strength 0.5, 2 steps -> [499, 259]
    ("soft_2steps_s05", "soft", "a watercolor", 2, 0.5, 1.0, (64, 64)),
]

RULE = {
    "image": "RGB 8-bit -> float32 / 255 * 2 - 1 (-1..1), NCHW (diffusers' image_processor)",
    "mask_preprocess": "PIL mask -> convert('L') -> float32 / 255 -> binarize: < 0.5 -> 0, >= 0.5 -> 1 (8-bit gray "
                       ">= 128 -> 1) = mask_condition [1,1,H,W] (1 = change); a mask of another size would first be "
                       "resized to HxW with PIL Lanczos (none here)",
    "masked_image": "init_image * (mask_condition < 0.5) in the -1..1 range: kept pixels unchanged, pixels to change "
                    "exactly 0.0 (mid-grey, 0.5 in 0..1; not black)",
    "masked_image_latents": "VAE encoder mean of masked_image * scaling_factor (0.18215) [1,4,h,w]",
    "mask_latent": "torch.nn.functional.interpolate(mask_condition, size=(H/8, W/8)), mode 'nearest': m[i, j] = "
                   "mask_condition[8 i, 8 j] (top-left pixel of each 8x8 block), 0 or 1 only",
    "initial_latents": "strength == 1: noise[0] (pure noise; the whole image is not encoded); strength < 1: "
                       "add_noise(x0, noise[0], t0) = sqrt(ab[t0]) x0 + sqrt(1 - ab[t0]) noise[0], x0 = VAE mean of "
                       "the WHOLE (unmasked) image * scaling_factor",
    "unet_sample": "concat([x, m, masked_image_latents], axis=1) = [B, 9, h, w] every step (4 + 1 + 4 channels, this "
                   "order); LCM's scale_model_input is the identity",
    "cfg": "guidance > 1: batch 2, both rows the same 9-channel sample (x, m and masked_image_latents each "
           "duplicated); encoder_hidden_states [uncond = encode(''), cond]; eps = eps_u + guidance (eps_c - eps_u); "
           "guidance 1: batch 1, no uncond",
    "step": "LCM step on the 4-channel x with the guided eps (re-noising with noise[i+1] to t[i+1] for i < last; "
            "the last step returns denoised)",
    "paste_back": "none: the final latents are the last LCM step's denoised, decoded as they are (no blend with the "
                  "image latents, no pixel overlay)",
    "noise": "noise[0]: initial noise; noise[k], k >= 1: the LCM step's re-noising after step k-1",
}


def mask_image(name, kind, w, h):
    """The case's mask (inpaint.draw_mask), written as NAME_mask.png here and read back: the pipeline gets exactly
    the committed pixels."""
    path = os.path.join(OUT, f"{name}_mask.png")
    inpaint.draw_mask(kind, w, h).save(path)
    return Image.open(path)


def pipeline(mods, imods):
    pipe = StableDiffusionInpaintPipeline(
        vae=mods[BASE]["vae"], text_encoder=mods["text_encoder"],
        tokenizer=clip_vocab.sd1_tokenizer(pad_token="<|endoftext|>"), unet=imods[MODEL]["unet"],
        scheduler=LCMScheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.in_channels == 9 and pipe.unet.config.out_channels == 4
    inpaint.use_lcm_img2img_rule(pipe)
    return pipe


def check_unet_against_onnx(unet):
    """The rebuilt torch UNet must be the one the committed unet.onnx was exported from (batch 2, 9 channels)."""
    rng = np.random.default_rng(0)
    sess = gc.ort_session(os.path.join(ROOT, "models", MODEL, "unet.onnx"))
    sample = rng.standard_normal((2, 9, 8, 6)).astype(np.float32)
    ehs = rng.standard_normal((2, 77, export_models.TINY_TEXT_HIDDEN)).astype(np.float32)
    t = np.array([499, 259], np.int64)
    got = sess.run(None, {"sample": sample, "timestep": t, "encoder_hidden_states": ehs})[0]
    with torch.no_grad():
        want = unet(torch.from_numpy(sample), torch.from_numpy(t), torch.from_numpy(ehs)).sample.numpy()
    err = float(np.abs(got - want).max())
    assert got.shape == (2, 4, 8, 6) and err < 1e-4, f"{MODEL}: torch UNet differs from unet.onnx by {err}"
    return err


def record(pipe, rec):
    """Records prepare_latents' output (initial latents, noise), prepare_mask_latents' inputs (mask_condition,
    masked_image) and outputs (m, masked_image_latents), and each LCM step's guided eps and denoised output."""
    prepare_latents, prepare_mask_latents, step = pipe.prepare_latents, pipe.prepare_mask_latents, pipe.scheduler.step

    def prepare_latents_rec(*a, **k):
        out = prepare_latents(*a, **k)
        assert len(out) == 2, "a 9-channel UNet asks for no image latents"
        rec["init"], rec["init_noise"] = out
        return out

    def prepare_mask_latents_rec(mask, masked_image, *a, **k):
        rec["mask_condition"], rec["masked_image"] = mask.clone(), masked_image.clone()
        out = prepare_mask_latents(mask, masked_image, *a, **k)
        rec["mask"], rec["masked_image_latents"] = out
        return out

    def step_rec(model_output, timestep, sample, *a, **k):
        rec["eps"].append(model_output.clone())
        out = step(model_output, timestep, sample, *a, **k)
        rec["lcm_denoised"].append(out[1].clone())
        return out

    pipe.prepare_latents, pipe.prepare_mask_latents, pipe.scheduler.step = (prepare_latents_rec,
                                                                            prepare_mask_latents_rec, step_rec)


class OnnxReplay:
    """The whole 9-channel frame path from the committed ONNX files and numpy only, as the Rust side must do it."""

    def __init__(self):
        model = export_models.read_manifest(os.path.join(ROOT, "models", MODEL))
        self.scale = float(model["latent-scale"])

        def session(role):
            return gc.ort_session(os.path.normpath(os.path.join(ROOT, "models", MODEL, model["files"][role])))

        self.unet, self.enc, self.dec, self.text = (session(r) for r in ("unet", "vae-encoder", "vae-decoder",
                                                                           "text-encoder"))
        self.tokenizer = clip_vocab.sd1_tokenizer(pad_token=model["tokenizer"]["pad-token"])
        self.ab = LCMScheduler().alphas_cumprod.numpy().astype(np.float64)

    def embed(self, prompt):
        ids = self.tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        return self.text.run(None, {"input_ids": np.array([ids], np.int32)})[0]

    def encode(self, image):
        return self.enc.run(None, {"sample": image.astype(np.float32)})[0] * self.scale

    def __call__(self, png, mask_png, prompt, timesteps, strength, guidance, noise):
        image = np.asarray(png, np.float32).transpose(2, 0, 1)[None] / 255.0 * 2.0 - 1.0
        mask = (np.asarray(mask_png.convert("L"), np.float32)[None, None] / 255.0 >= 0.5).astype(np.float32)
        masked_latents = self.encode(image * (mask < 0.5))
        m = mask[:, :, 0::8, 0::8]
        ab = self.ab
        if strength == 1.0:
            x = noise[0].astype(np.float64)
        else:
            x = math.sqrt(ab[timesteps[0]]) * self.encode(image) + math.sqrt(1 - ab[timesteps[0]]) * noise[0]
        ehs = self.embed(prompt)
        cfg = guidance > 1.0
        if cfg:
            ehs = np.concatenate([self.embed(""), ehs])
        steps = []
        for i, t in enumerate(timesteps):
            sample = np.concatenate([x, m, masked_latents], axis=1).astype(np.float32)
            if cfg:
                sample = np.concatenate([sample, sample])
            eps = self.unet.run(None, {"sample": sample, "timestep": np.full((sample.shape[0],), t, np.int64),
                                       "encoder_hidden_states": ehs})[0].astype(np.float64)
            if cfg:
                eps = eps[:1] + guidance * (eps[1:] - eps[:1])
            _, c_skip, c_out = export_models._lcm_scalars(t)
            x0 = (x - math.sqrt(1 - ab[t]) * eps) / math.sqrt(ab[t])
            denoised = c_out * x0 + c_skip * x
            if i < len(timesteps) - 1:
                t_next = timesteps[i + 1]
                x = math.sqrt(ab[t_next]) * denoised + math.sqrt(1 - ab[t_next]) * noise[i + 1]
            else:
                x = denoised
            steps.append(x)
        decoded = self.dec.run(None, {"latent_sample": (x / self.scale).astype(np.float32)})[0] * 0.5 + 0.5
        return steps, np.clip(decoded, 0.0, 1.0)


def main():
    started = time.time()
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    mods = export_models.tiny_modules()
    img2img.check_against_onnx(mods)
    imods = export_models.tiny_inpaint_modules()
    unet_err = check_unet_against_onnx(imods[MODEL]["unet"])
    print(f"{MODEL}: torch UNet vs unet.onnx max |d| {unet_err:.1e}")
    sd_inpaint_mod.retrieve_latents = gc.retrieve_mean
    replay = OnnxReplay()
    astronaut = Image.open(gc.ASTRONAUT).convert("RGB")
    rng = np.random.default_rng(SEED)
    manifest = []
    for name, kind, prompt, steps, strength, guidance, (w, h) in CASES:
        pipe = pipeline(mods, imods)
        scale = pipe.vae.config.scaling_factor
        run = gc.lcm_rule(steps, strength)
        shape = (1, 4, h // 8, w // 8)
        noise = [rng.standard_normal(shape).astype(np.float32) for _ in range(len(run))]
        image = gc.input_image(OUT, name, astronaut, w, h)
        mask_png = mask_image(name, kind, w, h)
        rec = {"eps": [], "lcm_denoised": [], "steps": [], "unet_in": [], "ehs": []}
        record(pipe, rec)

        def on_step_end(p, i, t, kw):
            rec["steps"].append(kw["latents"].clone())
            return {}

        def unet_hook(*a, **k):
            rec["unet_in"].append(a[0].clone())
            rec["ehs"].append(k["encoder_hidden_states"].clone())

        kwargs = dict(prompt=prompt, image=image, mask_image=mask_png, num_inference_steps=steps, strength=strength,
                      guidance_scale=guidance, height=h, width=w, output_type="np", callback_on_step_end=on_step_end,
                      callback_on_step_end_tensor_inputs=["latents"])
        seen = {"latents": [], "decoded": [], "denoised": []}
        result = gc.run_recorded(pipe, kwargs, gc.NoiseQueue(noise), (sd_inpaint_mod, scheduling_lcm), seen,
                                 unet=unet_hook)
        ran = [int(t) for t in pipe.scheduler.timesteps]
        assert ran == run, f"{name}: the pipeline ran {ran}, not {run}"
        assert len(rec["steps"]) == len(run) == len(rec["unet_in"]) == len(rec["eps"])
        cfg = guidance > 1.0
        batch = 2 if cfg else 1

        # The mask: binarised at 0.5, then the top-left pixel of each 8x8 block.
        png = np.asarray(image, np.float32).transpose(2, 0, 1)[None]
        gray = np.asarray(mask_png.convert("L"), np.float32)[None, None] / 255.0
        mask_bin = (gray >= 0.5).astype(np.float32)
        assert np.array_equal(rec["mask_condition"].numpy(), mask_bin), f"{name}: mask binarisation differs"
        m_all = rec["mask"].numpy()
        assert m_all.shape == (batch, 1, h // 8, w // 8) and np.array_equal(m_all[:1], m_all[-1:])
        m = m_all[:1]
        assert np.array_equal(m, inpaint.expected_mask_latent(mask_png)), f"{name}: latent mask rule differs"
        assert np.array_equal(m, mask_bin[:, :, 0::8, 0::8])

        # The masked image: the -1..1 image times (mask < 0.5); the pixels to change are 0.0 exactly.
        image_m11 = png / 255.0 * 2.0 - 1.0
        masked_np = image_m11 * (mask_bin < 0.5)
        masked_err = float(np.abs(rec["masked_image"].numpy() - masked_np).max())
        assert masked_err < 1e-6, f"{name}: masked image differs from the rule by {masked_err}"
        assert np.all(rec["masked_image"].numpy()[np.broadcast_to(mask_bin == 1, masked_np.shape)] == 0.0)

        # Its latents: the VAE mean * scaling factor (torch as diffusers encoded them; the committed ONNX encoder).
        mil_all = rec["masked_image_latents"].numpy()
        assert mil_all.shape == (batch, 4, h // 8, w // 8) and np.array_equal(mil_all[:1], mil_all[-1:])
        mil = mil_all[:1]
        encodes = seen["latents"]  # strength < 1: the whole image first (prepare_latents), then the masked one
        assert len(encodes) == (1 if strength == 1.0 else 2), (name, len(encodes))
        assert np.array_equal(encodes[-1].numpy(), mil)
        mil_onnx_err = float(np.abs(replay.encode(masked_np) - mil).max())
        assert mil_onnx_err < 1e-4, f"{name}: ONNX encoder differs on the masked image by {mil_onnx_err}"

        # The first UNet input and every later one: concat([x, m, masked_image_latents]), batch rows identical.
        ab = pipe.scheduler.alphas_cumprod.numpy().astype(np.float64)
        assert np.array_equal(rec["init_noise"].numpy(), noise[0])
        x0 = None
        if strength == 1.0:
            start = noise[0]
        else:
            x0 = encodes[0].numpy()
            x0_onnx_err = float(np.abs(replay.encode(image_m11) - x0).max())
            assert x0_onnx_err < 1e-4, f"{name}: ONNX encoder differs on the image by {x0_onnx_err}"
            start = np.sqrt(ab[run[0]]) * x0 + np.sqrt(1.0 - ab[run[0]]) * noise[0]
        concat_err = 0.0
        for i in range(len(run)):
            sample = rec["unet_in"][i].numpy()
            assert sample.shape == (batch, 9, h // 8, w // 8), (name, sample.shape)
            assert np.array_equal(sample[:1], sample[-1:]), f"{name}: CFG rows of the UNet sample differ"
            x = start if i == 0 else rec["steps"][i - 1].numpy()
            want = np.concatenate([x, m, mil], axis=1)
            concat_err = max(concat_err, float(np.abs(sample[:1] - want).max()))
            assert rec["ehs"][i].shape[0] == batch
        assert concat_err < 1e-6, f"{name}: the UNet sample differs from the concat rule by {concat_err}"

        # No paste-back: the final latents are the last LCM step's denoised output, decoded as they are.
        final = rec["steps"][-1].numpy()
        assert np.array_equal(final, rec["lcm_denoised"][-1].numpy()), f"{name}: the final latents were altered"
        assert np.abs(seen["denoised"][-1].numpy() - final).max() < 1e-5

        # The same case from the committed ONNX files and numpy only.
        replay_steps, replay_out = replay(image, mask_png, prompt, run, strength, guidance, noise)
        output = np.ascontiguousarray(result.transpose(0, 3, 1, 2))
        replay_steps_err = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(replay_steps, rec["steps"]))
        replay_out_err = float(np.abs(replay_out - output).max())
        assert replay_steps_err < 1e-3 and replay_out_err < 1e-3, (name, replay_steps_err, replay_out_err)

        np.save(os.path.join(OUT, f"{name}_mask_latent.npy"), m.astype(np.float32))
        np.save(os.path.join(OUT, f"{name}_masked_image_latents.npy"), mil.astype(np.float32))
        if x0 is not None:
            np.save(os.path.join(OUT, f"{name}_image_latents.npy"), x0.astype(np.float32))
        np.save(os.path.join(OUT, f"{name}_unet_in_0.npy"), rec["unet_in"][0][:1].numpy().astype(np.float32))
        np.save(os.path.join(OUT, f"{name}_eps.npy"), np.stack([e.numpy().astype(np.float32) for e in rec["eps"]]))
        np.save(os.path.join(OUT, f"{name}_steps.npy"), np.stack([s.numpy().astype(np.float32) for s in rec["steps"]]))
        seen["latents"] = []  # written above (NAME_masked_image_latents.npy, NAME_image_latents.npy)
        output = gc.save_case(OUT, name, noise, result, seen)
        checks = {"masked_image_vs_rule_max_abs": masked_err, "masked_image_latents_onnx_vs_diffusers_max_abs":
                  mil_onnx_err, "unet_sample_vs_concat_rule_max_abs": concat_err,
                  "onnx_replay_steps_max_abs": replay_steps_err, "onnx_replay_output_max_abs": replay_out_err}
        if x0 is not None:
            checks["image_latents_onnx_vs_diffusers_max_abs"] = x0_onnx_err
        manifest.append({
            "name": name, "model": MODEL, "pipeline": type(pipe).__name__, "prompt": prompt, "negative_prompt": None,
            "steps": steps, "strength": strength, "guidance": guidance, "cfg_batch": batch, "width": w, "height": h,
            "seed": SEED, "timesteps": ran, "mask_kind": kind,
            "first_unet_input": "concat([noise[0], m, masked_image_latents])" if strength == 1.0 else
            "concat([add_noise(image_latents, noise[0], t0), m, masked_image_latents])",
            "mask_latent_ones": int(m.sum()), "checks": checks})
        print(f"{name}: timesteps {ran}, guidance {guidance} (batch {batch}), mask {kind} ({int(m.sum())}/{m.size} "
              f"change), concat {concat_err:.1e}, masked latents ONNX {mil_onnx_err:.1e}, ONNX replay steps "
              f"{replay_steps_err:.1e} output {replay_out_err:.1e}, output mean {output.mean():.4f}")
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "scripts/golden/inpaint9.py", "diffusers": __import__("diffusers").__version__,
                   "model": MODEL, "unet_onnx_vs_torch_max_abs": unet_err, "rule": RULE,
                   "mask_kinds": inpaint.MASK_KINDS, "cases": manifest}, f, indent=1)
        f.write("\n")
    print(f"done in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
