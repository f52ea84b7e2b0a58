"""What the diffusers golden scripts (scripts/golden/img2img.py, sdxl.py, controlnet.py, sdxl_controlnet.py,
euler.py, scheduler.py) share: the two substitutions that make diffusers' output reproducible from Rust, running a
pipeline while recording what its VAE (and ControlNet, UNet) see, the per-case files, and the ControlNet goldens'
pose image and cases.

The substitutions, deliberate in every golden:
  - the VAE encoding is the distribution's mean (latentcam's exported encoders output the mean; an optimum encoder's
    `latent_parameters` are sliced to it): `retrieve_mean` replaces the pipeline modules' `retrieve_latents`;
  - all noise comes from stored tensors: a `NoiseQueue` replaces the modules' `randn_tensor`.

Not a script: imported by the ones above, which put this folder on sys.path.
"""
import os

import numpy as np
import onnxruntime as ort
import torch
from diffusers import LCMScheduler
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
ASTRONAUT = os.path.join(ROOT, "..", "shared", "media", "astronaut.png")


def retrieve_mean(encoder_output, generator=None, sample_mode="sample"):
    """Stands in for diffusers' retrieve_latents: the encoder distribution's mean, never a sample."""
    if hasattr(encoder_output, "latent_dist"):
        return encoder_output.latent_dist.mode()
    return encoder_output.latents


class NoiseQueue:
    """Stands in for diffusers' randn_tensor: the given noise arrays in order, then `zeros` zero tensors (the
    euler-ancestral draw of the last step, multiplied by sigma_up = 0, which no golden stores)."""

    def __init__(self, arrays, zeros=0):
        self.tensors = [torch.from_numpy(n) for n in arrays]
        self.zeros = zeros

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        if self.tensors:
            t = self.tensors.pop(0)
            assert tuple(t.shape) == tuple(shape), (t.shape, shape)
            return t.to(dtype=dtype or torch.float32)
        assert self.zeros > 0, "more noise drawn than stored"
        self.zeros -= 1
        return torch.zeros(shape, dtype=dtype or torch.float32)

    def done(self):
        return not self.tensors and self.zeros == 0


def lcm_rule(steps, strength):
    """latentcam's schedule: the LCM img2img rule (diffusers LCMScheduler.set_timesteps with strength)."""
    rule = LCMScheduler()
    rule.set_timesteps(num_inference_steps=steps, strength=strength)
    return [int(t) for t in rule.timesteps]


def use_lcm_img2img_rule(pipe):
    """Replaces an img2img pipeline's get_timesteps (the plain SD rule: 2 steps at 0.5 run only [499]) by the LCM
    img2img rule latentcam implements. The scheduler's timesteps and step index stay consistent: the LCM step
    re-noises to the next entry."""
    def lcm_img2img_timesteps(num_inference_steps, strength, device):
        pipe.scheduler.set_timesteps(num_inference_steps=num_inference_steps, device=device, strength=strength)
        return pipe.scheduler.timesteps, len(pipe.scheduler.timesteps)

    pipe.get_timesteps = lcm_img2img_timesteps


def run_recorded(pipe, kwargs, queue, modules, seen, **hooks):
    """pipe(**kwargs).images ([1, H, W, 3] in 0..1) with `queue` as randn_tensor in each of `modules`, recording
    what the VAE sees into `seen`: "latents" the scaled encoder mean, "decoded" the decoder's output before clamping,
    and, where `seen` has the key, "denoised" the loop's final latents (scaled, as latentcam's, before decoding).
    `hooks` name pipeline modules ("controlnet", "unet") whose forward is preceded by hook(*args, **kwargs), to record
    their inputs. Everything is restored afterwards, and every stored noise tensor must have been drawn."""
    for module in modules:
        module.randn_tensor = queue
    vae = pipe.vae
    original_encode, original_decode = vae.encode, vae.decode
    originals = {name: getattr(pipe, name).forward for name in hooks}

    def encode_and_record(x, *a, **k):
        out = original_encode(x, *a, **k)
        seen["latents"].append(retrieve_mean(out) * vae.config.scaling_factor)
        return out

    def decode_and_record(z, *a, **k):
        if "denoised" in seen:
            seen["denoised"].append(z * vae.config.scaling_factor)
        out = original_decode(z, *a, **k)
        seen["decoded"].append(out[0] if isinstance(out, tuple) else out.sample)
        return out

    def hooked(hook, forward):
        def forward_and_record(*a, **k):
            hook(*a, **k)
            return forward(*a, **k)

        return forward_and_record

    vae.encode, vae.decode = encode_and_record, decode_and_record
    for name, hook in hooks.items():
        getattr(pipe, name).forward = hooked(hook, originals[name])
    try:
        with torch.no_grad():
            result = pipe(**kwargs).images
    finally:
        vae.encode, vae.decode = original_encode, original_decode
        for name, forward in originals.items():
            getattr(pipe, name).forward = forward
    assert queue.done(), f"noise left over: {len(queue.tensors)} tensors, {queue.zeros} zeros"
    return result


def input_image(out, name, astronaut, w, h):
    """The case's input image, written as NAME_input.png and read back: the pipeline gets exactly the committed
    pixels."""
    path = os.path.join(out, f"{name}_input.png")
    astronaut.resize((w, h), Image.LANCZOS).save(path)
    return Image.open(path).convert("RGB")


def save_case(out, name, noise, result, seen, png=False):
    """The per-case files: NAME_noise.npy [n, 1, 4, h, w], NAME_output.npy (the pipeline's image as [1, 3, H, W]
    float 0..1; returned), NAME_decoded.npy, NAME_latents.npy where the VAE encoded an image, NAME_denoised.npy where
    `seen` records it, and with `png` NAME_output.png (diffusers' numpy_to_pil: round(x * 255))."""
    output = np.ascontiguousarray(result.transpose(0, 3, 1, 2).astype(np.float32))
    np.save(os.path.join(out, f"{name}_noise.npy"), np.stack(noise))
    np.save(os.path.join(out, f"{name}_output.npy"), output)
    if png:
        Image.fromarray((result[0] * 255).round().astype(np.uint8)).save(os.path.join(out, f"{name}_output.png"))
    # Before clamping: RGB 0..1 as the decoder gives it (diffusers' -1..1 mapped by x * 0.5 + 0.5).
    decoded = seen["decoded"][-1].detach().numpy().astype(np.float32) * 0.5 + 0.5
    np.save(os.path.join(out, f"{name}_decoded.npy"), decoded)
    if seen["latents"]:
        np.save(os.path.join(out, f"{name}_latents.npy"), seen["latents"][0].detach().numpy().astype(np.float32))
    if "denoised" in seen:
        np.save(os.path.join(out, f"{name}_denoised.npy"), seen["denoised"][-1].detach().numpy().astype(np.float32))
    return output


def ort_session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def check_controlnet_onnx(folder, base_unet, cn, unet, inputs, added, cond, scale=0.7):
    """folder's controlnet.onnx + unet_controlnet.onnx against diffusers' ControlNet `cn` and UNet `unet` on `inputs`
    (sample, timestep, encoder_hidden_states), SDXL's `added` conditioning (text_embeds, time_ids; empty for SD1.5)
    and the control image `cond` at conditioning scale `scale`; also unet_controlnet.onnx with zero residuals against
    `base_unet` (the base model's unet.onnx). Returns the max |d| of each (keys as cases.json's "onnx_vs_diffusers"),
    the largest residual's magnitude and the number of down residuals; asserts they agree and that the residuals
    matter (or the tests would check nothing)."""
    s_cn, s_un = ort_session(os.path.join(folder, "controlnet.onnx")), ort_session(os.path.join(folder,
                                                                                               "unet_controlnet.onnx"))
    s_base = ort_session(base_unet)
    n = len(cn.controlnet_down_blocks)
    got_res = s_cn.run(None, {**inputs, **added, "controlnet_cond": cond,
                              "conditioning_scale": np.array(scale, np.float32)})
    t = {k: torch.from_numpy(v) for k, v in {**inputs, **added}.items()}
    kw = {"added_cond_kwargs": {"text_embeds": t["text_embeds"], "time_ids": t["time_ids"]}} if added else {}
    with torch.no_grad():
        down, mid = cn(t["sample"], t["timestep"], t["encoder_hidden_states"], torch.from_numpy(cond),
                       conditioning_scale=scale, return_dict=False, **kw)
        want_res = [x.numpy() for x in (*down, mid)]
        want = unet(t["sample"], t["timestep"], t["encoder_hidden_states"], down_block_additional_residuals=tuple(down),
                    mid_block_additional_residual=mid, **kw).sample.numpy()
        plain = unet(t["sample"], t["timestep"], t["encoder_hidden_states"], **kw).sample.numpy()

    def unet_feeds(res):
        feeds = {**inputs, **added, **{f"down_block_additional_residuals_{i}": res[i] for i in range(n)}}
        feeds["mid_block_additional_residual"] = res[n]
        return feeds

    err = dict(
        controlnet_max_abs=max(float(np.abs(g - w).max()) for g, w in zip(got_res, want_res)),
        unet_controlnet_max_abs=float(np.abs(s_un.run(None, unet_feeds(want_res))[0] - want).max()),
        chain_max_abs=float(np.abs(s_un.run(None, unet_feeds(got_res))[0] - want).max()),
        zero_residuals_vs_unet_max_abs=float(np.abs(s_un.run(None, unet_feeds([np.zeros_like(r) for r in want_res]))[0]
                                                    - s_base.run(None, {**inputs, **added})[0]).max()),
        residual_effect_max_abs=float(np.abs(want - plain).max()))
    assert (err["controlnet_max_abs"] < 1e-4 and err["unet_controlnet_max_abs"] < 1e-4 and err["chain_max_abs"] < 1e-4
            and err["zero_residuals_vs_unet_max_abs"] < 1e-5), f"export differs from diffusers: {err}"
    assert err["residual_effect_max_abs"] > 1e-2, \
        "the ControlNet's residuals barely change the UNet output: the tests would check nothing"
    return err, max(float(np.abs(r).max()) for r in want_res), n


# The ControlNet goldens' cases (scripts/golden/controlnet.py for SD1.5, sdxl_controlnet.py for SDXL: the same
# ones), each with the pose image of its size.
# name, mode, prompt, steps, strength, guidance, controlnet scale, size (w, h), noise seed
CONTROLNET_CASES = [
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


def pose_image(out, poses, w, h):
    """The control image for a w x h case: pose_WxH.png, drawn and written on first use, then read back (the
    pipeline gets exactly the committed pixels) and kept in `poses` by file name. Returns (file name, image)."""
    control_file = f"pose_{w}x{h}.png"
    if control_file not in poses:
        draw_pose(w, h).save(os.path.join(out, control_file))
        poses[control_file] = Image.open(os.path.join(out, control_file)).convert("RGB")
    return control_file, poses[control_file]


def controlnet_case(out, case, control, astronaut):
    """One case of CONTROLNET_CASES for a ControlNet pipeline: its noise (from its seed), the pipeline's arguments and
    the noise queue. txt2img starts from noise[0] as the latents (LCMScheduler's init_noise_sigma is 1: no scaling)
    and draws the rest; img2img adds noise[0] to the encoded input image (written as NAME_input.png) at the case's
    strength, then draws the rest."""
    name, mode, prompt, steps, strength, guidance, cn_scale, (w, h), seed = case
    rng = np.random.default_rng(seed)
    noise = [rng.standard_normal((1, 4, h // 8, w // 8)).astype(np.float32) for _ in range(steps)]
    kwargs = dict(prompt=prompt, num_inference_steps=steps, guidance_scale=guidance,
                  controlnet_conditioning_scale=cn_scale, output_type="np")
    if mode == "txt2img":
        kwargs.update(image=control, height=h, width=w, latents=torch.from_numpy(noise[0]))
        return noise, kwargs, NoiseQueue(noise[1:])
    kwargs.update(image=input_image(out, name, astronaut, w, h), control_image=control, strength=strength)
    return noise, kwargs, NoiseQueue(noise)


def controlnet_hook(seen):
    """A run_recorded hook for the ControlNet: records its control image, its conditioning scale and, where `seen`
    has the key, its added conditioning (SDXL's text_embeds / time_ids)."""
    def record(*a, **k):
        seen["cond"].append(k["controlnet_cond"])
        seen["cn_scale"].append(k["conditioning_scale"])
        if "cn_added" in seen:
            seen["cn_added"].append(k["added_cond_kwargs"])

    return record


def check_controlnet_inputs(case, control, seen, timesteps_run):
    """The conditioning convention latentcam must follow: the ControlNet runs once per step on RGB 0..1 = png / 255,
    NCHW, no normalisation; batch 2 under classifier-free guidance; the residual scale exactly the case's."""
    name, _, _, _, _, guidance, cn_scale, (w, h), _ = case
    assert len(seen["cond"]) == len(timesteps_run), (name, len(seen["cond"]), timesteps_run)
    cond = seen["cond"][0].numpy()
    png01 = np.asarray(control, np.float32).transpose(2, 0, 1)[None] / 255.0
    batch = 2 if guidance > 1 else 1
    assert cond.shape == (batch, 3, h, w), (name, cond.shape)
    assert np.abs(cond - png01).max() < 1e-6, f"{name}: controlnet_cond is not png / 255"
    assert all(float(s) == cn_scale for s in seen["cn_scale"]), (name, seen["cn_scale"])
    return batch


def controlnet_pose_effect(poses, make_pipeline, modules):
    """How much the pose matters on these random weights (a sanity number, not a golden): the first case again with
    the ControlNet's residuals scaled to 0 and to 1 differ by this much (mean |d|) in the 0..1 output."""
    case = CONTROLNET_CASES[0]
    name, mode, _, _, _, _, _, (w, h), _ = case
    assert mode == "txt2img", "the pose effect run writes no input image"
    outs = []
    for s in (0.0, 1.0):
        _, kwargs, queue = controlnet_case(None, case[:6] + (s,) + case[7:], poses[f"pose_{w}x{h}.png"], None)
        outs.append(run_recorded(make_pipeline(mode), kwargs, queue, modules, {"latents": [], "decoded": []}))
    effect = float(np.abs(outs[0] - outs[1]).mean())
    print(f"{name}: mean |output(scale 1) - output(scale 0)| = {effect:.4f} (0..1 range)")
    assert effect > 1e-3, "the ControlNet does not change the image"
    return effect
