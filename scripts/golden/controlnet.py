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
Two deliberate substitutions, as in scripts/golden/img2img.py: the VAE encoding is the distribution's mean (the
exported encoders output the mean), and all noise comes from the stored tensors.

Per case (name = cases.json's "name"): NAME_noise.npy [n, 1, 4, h, w] (noise[0] = initial noise, then one per
re-noising), NAME_decoded.npy (the VAE decoder's output before clamping, mapped to 0..1 by x * 0.5 + 0.5, [1,3,H,W]),
NAME_output.npy (diffusers' final image, float 0..1, [1,3,H,W]), NAME_output.png (its 8-bit form, diffusers'
numpy_to_pil: round(x * 255)); img2img also NAME_input.png and NAME_latents.npy (the scaled encoder mean). The control
images (OpenPose-style skeletons, drawn here: deterministic, no OpenPose renderer needed) are pose_WxH.png, named by
each case's "control".

Run: .venv-scripts/bin/python scripts/golden/controlnet.py   (scripts/pyenv.sh makes the venv; the ONNX models come
from `scripts/export_models.py tiny`)
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import clip_vocab  # noqa: E402
import export_models  # noqa: E402
from diffusers import (  # noqa: E402
    LCMScheduler,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
)
from diffusers.pipelines.controlnet import pipeline_controlnet as t2i_mod  # noqa: E402
from diffusers.pipelines.controlnet import pipeline_controlnet_img2img as i2i_mod  # noqa: E402
from diffusers.schedulers import scheduling_lcm  # noqa: E402

OUT = os.path.join(ROOT, "tests", "golden", "controlnet")
ASTRONAUT = os.path.join(ROOT, "..", "shared", "media", "astronaut.png")
MODEL = "tiny-sd15-lcm-lora-controlnet"
BASE = export_models.TINY_CONTROLNETS[MODEL]

CASES = [
    # name, mode, prompt, steps, strength, guidance, controlnet scale, size (w, h), noise seed
    # plain 2-step txt2img from the pose: timesteps [999, 499], ControlNet at full strength
    ("t2i_2steps", "txt2img", "a dancer on a stage", 2, None, 1.0, 1.0, (64, 64), 1),
    # 1 step, half-strength residuals (conditioning_scale is a run-time input), a non-square size
    ("t2i_1step_scale05", "txt2img", "a robot", 1, None, 1.0, 0.5, (64, 48), 2),
    # classifier-free guidance: UNet and ControlNet on batch 2 ([uncond, cond], control image duplicated)
    ("t2i_cfg_2steps", "txt2img", "an oil painting of a knight", 2, None, 1.8, 1.0, (64, 64), 3),
    # img2img guided by the pose, LCM img2img rule: strength 0.6, 2 steps -> [599, 299]
    ("i2i_2steps", "img2img", "a photo of an astronaut dancing", 2, 0.6, 1.0, 1.0, (64, 64), 4),
    # non-square, half strength residuals, strength 0.5 -> [499, 259]
    ("i2i_2steps_scale05", "img2img", "a statue", 2, 0.5, 1.0, 0.5, (64, 48), 5),
    # img2img with classifier-free guidance and a 0.8 ControlNet scale, strength 0.7 -> [699, 359]
    ("i2i_cfg_2steps", "img2img", "a watercolor", 2, 0.7, 1.5, 0.8, (64, 64), 6),
]

# OpenPose-18: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist, r-hip, r-knee, r-ankle,
# l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear. A figure facing the camera (its right on the image's left),
# right arm raised, left arm down, in 0..1 image coordinates.
POSE = [(0.50, 0.16), (0.50, 0.28), (0.40, 0.28), (0.32, 0.18), (0.30, 0.07), (0.60, 0.28), (0.66, 0.42),
        (0.70, 0.55), (0.43, 0.56), (0.40, 0.74), (0.38, 0.93), (0.57, 0.56), (0.62, 0.74), (0.66, 0.93),
        (0.48, 0.14), (0.52, 0.14), (0.46, 0.15), (0.54, 0.15)]
# The first 17 limb pairs of the v1.1 annotator's limbSeq (1-based) and its palette (DESIGN.md section 4).
LIMBS = [(2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13), (13, 14),
         (2, 1), (1, 15), (15, 17), (1, 16), (16, 18)]
COLORS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]


def draw_pose(w, h):
    """A simple OpenPose-style skeleton: limbs as thick lines in the palette on black, the canvas x0.6 (truncated),
    then the joints as filled circles. PIL's ImageDraw without anti-aliasing: deterministic pixels."""
    pts = [(x * w, y * h) for x, y in POSE]
    canvas = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(canvas)
    width = max(2, round(min(w, h) / 20))
    for i, (a, b) in enumerate(LIMBS):
        d.line([pts[a - 1], pts[b - 1]], fill=COLORS[i], width=width)
    canvas = Image.fromarray((np.asarray(canvas).astype(np.float32) * 0.6).astype(np.uint8))
    d = ImageDraw.Draw(canvas)
    r = max(1, round(min(w, h) / 32))
    for i, (x, y) in enumerate(pts):
        d.ellipse([int(x) - r, int(y) - r, int(x) + r, int(y) + r], fill=COLORS[i])
    return canvas


# The VAE encoding as the mean, and noise taken from stored tensors: the same substitutions as the img2img goldens.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from img2img import NoiseQueue, retrieve_mean  # noqa: E402


def _ort(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def check_against_onnx(mods):
    """The exported controlnet.onnx + unet_controlnet.onnx against diffusers' ControlNetModel + UNet2DConditionModel
    (the torch modules the goldens use) on one random input: batch 2, 64x48 (latents 8x6), two timesteps,
    conditioning_scale 0.7. Also: unet_controlnet.onnx with zero residuals == the base folder's unet.onnx."""
    folder = os.path.join(ROOT, "models", MODEL)
    cn, unet = mods[MODEL]["controlnet"], mods[MODEL]["unet"]
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((2, 4, 6, 8)).astype(np.float32)
    t = np.array([499, 259], np.int64)
    ehs = rng.standard_normal((2, 77, export_models.TINY_TEXT_HIDDEN)).astype(np.float32)
    cond = rng.random((2, 3, 48, 64)).astype(np.float32)
    scale = np.array(0.7, np.float32)
    s_cn = _ort(os.path.join(folder, "controlnet.onnx"))
    s_un = _ort(os.path.join(folder, "unet_controlnet.onnx"))
    s_base = _ort(os.path.join(ROOT, "models", BASE, "unet.onnx"))
    n = len(cn.controlnet_down_blocks)
    got_res = s_cn.run(None, dict(sample=sample, timestep=t, encoder_hidden_states=ehs, controlnet_cond=cond,
                                  conditioning_scale=scale))
    with torch.no_grad():
        down, mid = cn(torch.from_numpy(sample), torch.from_numpy(t), torch.from_numpy(ehs), torch.from_numpy(cond),
                       conditioning_scale=0.7, return_dict=False)
        want_res = [x.numpy() for x in (*down, mid)]
        want = unet(torch.from_numpy(sample), torch.from_numpy(t), torch.from_numpy(ehs),
                    down_block_additional_residuals=tuple(down), mid_block_additional_residual=mid).sample.numpy()
        plain = unet(torch.from_numpy(sample), torch.from_numpy(t), torch.from_numpy(ehs)).sample.numpy()
    err_cn = max(float(np.abs(g - w).max()) for g, w in zip(got_res, want_res))
    res_mag = max(float(np.abs(w).max()) for w in want_res)

    def unet_feeds(res):
        feeds = dict(sample=sample, timestep=t, encoder_hidden_states=ehs)
        feeds.update({f"down_block_additional_residuals_{i}": res[i] for i in range(n)})
        feeds["mid_block_additional_residual"] = res[n]
        return feeds

    err_un = float(np.abs(s_un.run(None, unet_feeds(want_res))[0] - want).max())
    err_chain = float(np.abs(s_un.run(None, unet_feeds(got_res))[0] - want).max())
    zeros = [np.zeros_like(r) for r in want_res]
    err_zero = float(np.abs(s_un.run(None, unet_feeds(zeros))[0] -
                            s_base.run(None, dict(sample=sample, timestep=t, encoder_hidden_states=ehs))[0]).max())
    effect = float(np.abs(want - plain).max())
    print(f"ONNX vs diffusers (batch 2, 64x48, t [499, 259], conditioning_scale 0.7, {n} down residuals + mid):")
    print(f"  controlnet.onnx residuals          max |d| {err_cn:.2e}  (max |residual| {res_mag:.3f})")
    print(f"  unet_controlnet.onnx (torch res.)  max |d| {err_un:.2e}")
    print(f"  controlnet.onnx -> unet_controlnet.onnx vs torch chain  max |d| {err_chain:.2e}")
    print(f"  unet_controlnet.onnx, zero residuals, vs {BASE}/unet.onnx  max |d| {err_zero:.2e}")
    print(f"  the residuals' effect on the UNet output: max |d| {effect:.3f} (vs no ControlNet)")
    assert err_cn < 1e-4 and err_un < 1e-4 and err_chain < 1e-4 and err_zero < 1e-5, "export differs from diffusers"
    assert effect > 1e-2, "the ControlNet's residuals barely change the UNet output: the tests would check nothing"
    return dict(controlnet_max_abs=err_cn, unet_controlnet_max_abs=err_un, chain_max_abs=err_chain,
                zero_residuals_vs_unet_max_abs=err_zero, residual_effect_max_abs=effect)


def pipeline(mode, mods):
    common = dict(vae=mods[BASE]["vae"], text_encoder=mods["text_encoder"],
                  tokenizer=clip_vocab.sd1_tokenizer(pad_token="<|endoftext|>"), unet=mods[MODEL]["unet"],
                  controlnet=mods[MODEL]["controlnet"], scheduler=LCMScheduler(), safety_checker=None,
                  feature_extractor=None, requires_safety_checker=False)
    cls = StableDiffusionControlNetPipeline if mode == "txt2img" else StableDiffusionControlNetImg2ImgPipeline
    pipe = cls(**common)
    pipe.set_progress_bar_config(disable=True)
    if mode == "img2img":
        def lcm_img2img_timesteps(num_inference_steps, strength, device):
            pipe.scheduler.set_timesteps(num_inference_steps=num_inference_steps, device=device, strength=strength)
            return pipe.scheduler.timesteps, len(pipe.scheduler.timesteps)

        pipe.get_timesteps = lcm_img2img_timesteps
    return pipe


def main():
    os.makedirs(OUT, exist_ok=True)
    mods = export_models.tiny_modules()
    onnx_check = check_against_onnx(mods)
    i2i_mod.retrieve_latents = retrieve_mean
    astronaut = Image.open(ASTRONAUT).convert("RGB")
    manifest = []
    poses = {}
    for name, mode, prompt, steps, strength, guidance, cn_scale, (w, h), seed in CASES:
        control_file = f"pose_{w}x{h}.png"
        if control_file not in poses:
            draw_pose(w, h).save(os.path.join(OUT, control_file))
            poses[control_file] = Image.open(os.path.join(OUT, control_file)).convert("RGB")
        control = poses[control_file]
        pipe = pipeline(mode, mods)
        shape = (1, 4, h // 8, w // 8)
        rng = np.random.default_rng(seed)
        noise = [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)]
        kwargs = dict(prompt=prompt, num_inference_steps=steps, guidance_scale=guidance,
                      controlnet_conditioning_scale=cn_scale, output_type="np")
        if mode == "txt2img":
            queue = NoiseQueue([torch.from_numpy(n) for n in noise[1:]])
            kwargs.update(image=control, height=h, width=w, latents=torch.from_numpy(noise[0]))
        else:
            queue = NoiseQueue([torch.from_numpy(n) for n in noise])
            image = astronaut.resize((w, h), Image.LANCZOS)
            image.save(os.path.join(OUT, f"{name}_input.png"))
            image = Image.open(os.path.join(OUT, f"{name}_input.png")).convert("RGB")  # exactly the committed pixels
            kwargs.update(image=image, control_image=control, strength=strength)
        t2i_mod.randn_tensor = queue
        i2i_mod.randn_tensor = queue
        scheduling_lcm.randn_tensor = queue

        seen = {"latents": [], "decoded": [], "cond": [], "cn_scale": []}
        original_encode, original_decode = pipe.vae.encode, pipe.vae.decode
        original_cn = pipe.controlnet.forward

        def encode_and_record(x, *a, **k):
            out = original_encode(x, *a, **k)
            seen["latents"].append(retrieve_mean(out) * pipe.vae.config.scaling_factor)
            return out

        def decode_and_record(z, *a, **k):
            out = original_decode(z, *a, **k)
            seen["decoded"].append(out[0] if isinstance(out, tuple) else out.sample)
            return out

        def controlnet_and_record(*a, **k):
            seen["cond"].append(k["controlnet_cond"])
            seen["cn_scale"].append(k["conditioning_scale"])
            return original_cn(*a, **k)

        pipe.vae.encode, pipe.vae.decode = encode_and_record, decode_and_record
        pipe.controlnet.forward = controlnet_and_record
        try:
            with torch.no_grad():
                result = pipe(**kwargs).images  # [1, H, W, 3] in 0..1
        finally:
            pipe.vae.encode, pipe.vae.decode = original_encode, original_decode
            pipe.controlnet.forward = original_cn
        assert not queue.tensors, f"{name}: {len(queue.tensors)} noise tensors unused"
        timesteps_run = [int(t) for t in pipe.scheduler.timesteps]
        assert len(seen["cond"]) == len(timesteps_run), (name, len(seen["cond"]), timesteps_run)

        # The conditioning convention latentcam must follow: RGB 0..1 = png / 255, NCHW, no normalisation;
        # batch 2 under classifier-free guidance; the residual scale exactly the case's.
        cond = seen["cond"][0].numpy()
        png01 = np.asarray(control, np.float32).transpose(2, 0, 1)[None] / 255.0
        batch = 2 if guidance > 1 else 1
        assert cond.shape == (batch, 3, h, w), (name, cond.shape)
        assert np.abs(cond - png01).max() < 1e-6, f"{name}: controlnet_cond is not png / 255"
        assert all(float(s) == cn_scale for s in seen["cn_scale"]), (name, seen["cn_scale"])

        output = np.ascontiguousarray(result.transpose(0, 3, 1, 2).astype(np.float32))
        np.save(os.path.join(OUT, f"{name}_noise.npy"), np.stack(noise))
        np.save(os.path.join(OUT, f"{name}_output.npy"), output)
        Image.fromarray((result[0] * 255).round().astype(np.uint8)).save(os.path.join(OUT, f"{name}_output.png"))
        # Before clamping: RGB 0..1 as the decoder gives it (diffusers' -1..1 mapped by x * 0.5 + 0.5).
        decoded = seen["decoded"][-1].detach().numpy().astype(np.float32) * 0.5 + 0.5
        np.save(os.path.join(OUT, f"{name}_decoded.npy"), decoded)
        if mode == "img2img":
            np.save(os.path.join(OUT, f"{name}_latents.npy"), seen["latents"][0].detach().numpy().astype(np.float32))
        manifest.append({"name": name, "model": MODEL, "mode": mode, "pipeline": type(pipe).__name__,
                         "prompt": prompt, "steps": steps, "strength": strength, "guidance": guidance,
                         "controlnet_scale": cn_scale, "timesteps": None, "width": w, "height": h,
                         "control": control_file, "timesteps_run": timesteps_run})
        print(f"{name}: {type(pipe).__name__}, timesteps {timesteps_run}, scale {cn_scale}, guidance {guidance}, "
              f"output mean {output.mean():.4f}", flush=True)

    # How much the pose matters on these random weights (a sanity number, not a golden): the first case again
    # with the ControlNet's residuals scaled to 0 and to 1 differ by this much in the 0..1 output.
    name, mode, prompt, steps, _, guidance, _, (w, h), seed = CASES[0]
    noise = np.load(os.path.join(OUT, f"{name}_noise.npy"))
    outs = []
    for s in (0.0, 1.0):
        pipe = pipeline(mode, mods)
        queue = NoiseQueue([torch.from_numpy(n) for n in noise[1:]])
        t2i_mod.randn_tensor = scheduling_lcm.randn_tensor = queue
        with torch.no_grad():
            outs.append(pipe(prompt=prompt, image=poses[f"pose_{w}x{h}.png"], height=h, width=w,
                             latents=torch.from_numpy(noise[0]), num_inference_steps=steps, guidance_scale=guidance,
                             controlnet_conditioning_scale=s, output_type="np").images)
    pose_effect = float(np.abs(outs[0] - outs[1]).mean())
    print(f"{name}: mean |output(scale 1) - output(scale 0)| = {pose_effect:.4f} (0..1 range)")
    assert pose_effect > 1e-3, "the ControlNet does not change the image"

    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "scripts/golden/controlnet.py", "diffusers": __import__("diffusers").__version__,
                   "onnx_vs_diffusers": onnx_check, "cases": manifest}, f, indent=1)


if __name__ == "__main__":
    main()
