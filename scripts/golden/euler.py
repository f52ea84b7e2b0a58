#!/usr/bin/env python3
"""Golden files for the Euler schedulers (`euler`, `euler-ancestral`; DESIGN §7): tests/golden/euler/*, from diffusers'
EulerDiscreteScheduler / EulerAncestralDiscreteScheduler and its SDXL pipelines.

scheduler.json
  schedules     kind (euler, euler-ancestral) x prediction type x steps 1, 2, 3, 4, 8 x strengths 1.0, 0.5, 0.75:
                latentcam's rule, T = round(steps / strength) (no ties here), then the last `steps` entries of the
                trailing schedule of T steps (diffusers' set_timesteps(T) with timestep_spacing "trailing"):
                `timesteps`, `sigmas` (steps + 1 values: each run step's sigma, then the next one; the last is 0),
                `alphas_cumprod` at the run timesteps, for euler-ancestral `sigma_up` / `sigma_down` per run step
                (as EulerAncestralDiscreteScheduler.step computes them, float32), `full_timesteps` / `full_sigmas` (the
                whole T-step schedule), and what diffusers' img2img pipelines run for num_inference_steps=T and this
                strength (get_timesteps: init = min(int(T * strength), T), the last `init` entries):
                `diffusers_img2img_timesteps`, with `diffusers_rule_matches` (false where int(T * s) != steps).
                `init_noise_sigma`: diffusers' txt2img start is noise * init_noise_sigma (sigma-space); for trailing
                spacing it is sigma_max, NOT sqrt(sigma_max^2 + 1).
  trajectories  whole runs of the scheduler alone on [1,4,2,2] tensors: add_noise(x0, noise[0], t0) at the schedule's
                begin index, then per step scale_model_input and step() with a given model output; randn_tensor
                replaced by the stored noise (euler-ancestral: noise[i] is the draw of step i-1; step steps-1's draw is
                multiplied by sigma_up = 0 and gets zeros). Stored in diffusers' sigma space (`noisy`, `prev_sample`)
                and in latentcam's VP convention (`model_inputs` = x / sqrt(sigma^2 + 1), what the UNet sees;
                `prev_vp` = prev_sample / sqrt(sigma_next^2 + 1), so prev_vp[i] == model_inputs[i + 1] and the last
                is the final latent), plus `denoised` (pred_original_sample).
                EulerAncestralDiscreteScheduler has no "sample" prediction (NotImplementedError): euler only.

Pipeline cases (cases.json; the same per-case files as tests/golden/sdxl: NAME_input.png, NAME_noise.npy
[n, 1, 4, h, w], NAME_latents.npy (img2img: the scaled encoder mean), NAME_decoded.npy (before clamping, 0..1),
NAME_output.npy (0..1), and NAME_denoised.npy: the loop's final latents, scaled as latentcam's, before decoding):
  - euler-ancestral on tiny-sdxl-turbo (TAESD-style VAE), StableDiffusionXLImg2ImgPipeline with
    num_inference_steps = T and strength s (every case has T * s == steps: diffusers runs latentcam's schedule);
  - euler on tiny-sdxl-lightning-4step (epsilon) and tiny-sdxl-lightning-1step (sample prediction), the same way, and
    one case with explicit timesteps (EulerDiscreteScheduler takes them; EulerAncestral does not);
  - txt2img cases with StableDiffusionXLPipeline: latents = noise[0] * init_noise_sigma = sigma_max * noise[0]
    (trailing), so the UNet's first input is sqrt(1 - alpha_bar(999)) * noise[0] = latentcam's noising of ZERO
    latents at 999 with the noise as stored (no rescaling, unlike the LCM txt2img golden).
Noise: noise[0] = the initial noise (img2img add_noise at the first timestep, or txt2img's latents); euler-ancestral
then noise[i] = the noise its step i-1 adds (i = 1..steps-1); the last step's draw (times sigma_up = 0) is zeros and
not stored. Euler (s_churn 0) draws nothing: its file holds noise[0] only.
Substitutions as in scripts/golden/sdxl.py (golden_common.py): VAE encoding = the distribution's mean, all noise from
stored tensors.

Run: .venv-scripts/bin/python scripts/golden/euler.py   (needs the tiny SDXL models: scripts/export_models.py
tiny-sdxl, then tiny-sdxl-extra)
"""
import json
import os
import sys
import time

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
from diffusers import (  # noqa: E402
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.pipelines.stable_diffusion_xl import pipeline_stable_diffusion_xl as xl_mod  # noqa: E402
from diffusers.pipelines.stable_diffusion_xl import pipeline_stable_diffusion_xl_img2img as xl_i2i_mod  # noqa: E402
from diffusers.schedulers import scheduling_euler_ancestral_discrete as ea_mod  # noqa: E402
from diffusers.schedulers import scheduling_euler_discrete as euler_mod  # noqa: E402

OUT = os.path.join(ROOT, "tests", "golden", "euler")

# The hub's scheduler configs (the keys these schedulers read). SDXL-Turbo: EulerAncestralDiscreteScheduler as its
# scheduler_config.json; SDXL-Lightning: SDXL base's EulerDiscreteScheduler config with timestep_spacing "trailing"
# (ByteDance's recipe), prediction_type "sample" for the 1-step UNet.
COMMON = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
              steps_offset=1, timestep_spacing="trailing")
EULER_EXTRA = dict(interpolation_type="linear", use_karras_sigmas=False)
DIFFUSERS_PREDICTION = {"epsilon": "epsilon", "sample": "sample", "v-prediction": "v_prediction"}

STEPS = [1, 2, 3, 4, 8]
STRENGTHS = [1.0, 0.5, 0.75]
# (kind, latentcam prediction type) -> the (steps, strength) pairs of scheduler.json's schedules
SCHEDULE_SETS = {
    ("euler", "epsilon"): [(n, s) for n in STEPS for s in STRENGTHS],
    ("euler-ancestral", "epsilon"): [(n, s) for n in STEPS for s in STRENGTHS],
    ("euler", "sample"): [(n, s) for n in (1, 2, 4) for s in (1.0, 0.5)],
    ("euler", "v-prediction"): [(n, 0.5) for n in (2, 4)],
    ("euler-ancestral", "v-prediction"): [(n, 0.5) for n in (2, 4)],
}
TRAJECTORIES = [
    ("euler", "epsilon", 4, 1.0), ("euler", "epsilon", 2, 0.5), ("euler", "epsilon", 8, 0.5),
    ("euler", "sample", 1, 0.5), ("euler", "sample", 2, 1.0), ("euler", "v-prediction", 2, 0.5),
    ("euler-ancestral", "epsilon", 1, 0.5), ("euler-ancestral", "epsilon", 2, 0.5),
    ("euler-ancestral", "epsilon", 3, 0.75), ("euler-ancestral", "epsilon", 4, 1.0),
    ("euler-ancestral", "epsilon", 8, 0.5), ("euler-ancestral", "v-prediction", 2, 0.5),
]

# name, model, pipeline kind, prompt, negative prompt, steps, strength, guidance, explicit timesteps, size (w, h)
CASES = [
    # SDXL-Turbo, euler-ancestral, img2img: strength 0.5 -> T 4 -> [499, 249]
    ("ea_2steps", "tiny-sdxl-turbo", "img2img", "a photo of an astronaut", None, 2, 0.5, 1.0, None, (64, 64)),
    # strength 0.75 -> T 4 -> [749, 499, 249]
    ("ea_3steps", "tiny-sdxl-turbo", "img2img", "an oil painting", None, 3, 0.75, 1.0, None, (64, 64)),
    # strength 0.5 -> T 8 -> [499, 374, 249, 124]
    ("ea_4steps", "tiny-sdxl-turbo", "img2img", "a watercolor", None, 4, 0.5, 1.0, None, (64, 64)),
    # strength 1: the whole 4-step schedule from 999 (txt2img-like, the image's latent survives at sqrt(alpha_bar))
    ("ea_4steps_strength1", "tiny-sdxl-turbo", "img2img", "a castle on a hill", None, 4, 1.0, 1.0, None, (64, 64)),
    # classifier-free guidance (no negative prompt: zeros), the ancestral noise shared by both halves
    ("ea_cfg_2steps", "tiny-sdxl-turbo", "img2img", "a red car", None, 2, 0.5, 1.5, None, (64, 64)),
    # non-square (time_ids [64, 48, 0, 0, 64, 48])
    ("ea_3steps_48x64", "tiny-sdxl-turbo", "img2img", "a cat", None, 3, 0.75, 1.0, None, (48, 64)),
    # txt2img, 2 steps: [999, 499]
    ("ea_txt2img_2steps", "tiny-sdxl-turbo", "txt2img", "a cat", None, 2, 1.0, 1.0, None, (64, 64)),
    # SDXL-Lightning 4-step UNet, euler (no fresh noise), epsilon
    ("lightning_2steps_strength1", "tiny-sdxl-lightning-4step", "img2img", "a portrait", None, 2, 1.0, 1.0, None,
     (64, 64)),
    ("lightning_4steps_strength1", "tiny-sdxl-lightning-4step", "img2img", "a portrait", None, 4, 1.0, 1.0, None,
     (64, 64)),
    ("lightning_2steps", "tiny-sdxl-lightning-4step", "img2img", "a snowy forest", None, 2, 0.5, 1.0, None, (64, 64)),
    ("lightning_4steps", "tiny-sdxl-lightning-4step", "img2img", "a snowy forest", None, 4, 0.5, 1.0, None, (64, 64)),
    # 8 steps at strength 0.5 -> T 16: 1000 - i * 62.5 has halves; numpy rounds them to even (812.5 -> 812 -> 811)
    ("lightning_8steps", "tiny-sdxl-lightning-4step", "img2img", "a lighthouse at dusk", None, 8, 0.5, 1.0, None,
     (64, 64)),
    ("lightning_64x48", "tiny-sdxl-lightning-4step", "img2img", "a watercolor", None, 2, 0.5, 1.0, None, (64, 48)),
    # explicit timesteps (strength 1.0 in diffusers): sigmas [sigma(749), sigma(249), 0]
    ("lightning_explicit", "tiny-sdxl-lightning-4step", "img2img", "a statue", None, None, None, 1.0, [749, 249],
     (64, 64)),
    ("lightning_txt2img_4steps", "tiny-sdxl-lightning-4step", "txt2img", "a robot", None, 4, 1.0, 1.0, None,
     (64, 48)),
    # SDXL-Lightning 1-step UNet: prediction type "sample" (the UNet's output IS the denoised latent)
    ("lightning1_1step", "tiny-sdxl-lightning-1step", "img2img", "a photo of an astronaut", None, 1, 0.5, 1.0, None,
     (64, 64)),
    ("lightning1_1step_strength1", "tiny-sdxl-lightning-1step", "img2img", "a photo of an astronaut", None, 1, 1.0,
     1.0, None, (64, 64)),
    ("lightning1_txt2img", "tiny-sdxl-lightning-1step", "txt2img", "a dancer", None, 1, 1.0, 1.0, None, (64, 64)),
]


def manifest_scheduler(model):
    with open(os.path.join(ROOT, "models", model, "model.toml"), "rb") as f:
        import tomllib
        return tomllib.load(f)["scheduler"]


def make_scheduler(kind, prediction):
    pred = DIFFUSERS_PREDICTION[prediction]
    if kind == "euler":
        return EulerDiscreteScheduler(**COMMON, **EULER_EXTRA, prediction_type=pred)
    assert kind == "euler-ancestral", kind
    return EulerAncestralDiscreteScheduler(**COMMON, prediction_type=pred)


def latentcam_T(steps, strength):
    x = steps / strength
    assert abs(x - int(x) - 0.5) > 1e-9, f"steps {steps} / strength {strength} is a tie: say which rounding"
    return max(1, round(x))


def ancestral(sigma_from, sigma_to):
    """EulerAncestralDiscreteScheduler.step's sigma_up and sigma_down (float32 tensors, as it computes them)."""
    sigma_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return float(sigma_up), float(sigma_down)


def schedule(kind, prediction, steps, strength):
    T = latentcam_T(steps, strength)
    sched = make_scheduler(kind, prediction)
    sched.set_timesteps(T)
    full_t = [int(t) for t in sched.timesteps]
    full_s = sched.sigmas
    assert len(full_t) == T and float(full_s[-1]) == 0.0
    start = T - steps
    sigmas = full_s[start:]
    out = {"kind": kind, "prediction_type": prediction, "steps": steps, "strength": strength, "T": T,
           "timesteps": full_t[start:], "sigmas": [float(s) for s in sigmas],
           "alphas_cumprod": [float(sched.alphas_cumprod[t]) for t in full_t[start:]],
           "full_timesteps": full_t, "full_sigmas": [float(s) for s in full_s],
           "init_noise_sigma": float(sched.init_noise_sigma)}
    if kind == "euler-ancestral":
        ups, downs = zip(*[ancestral(sigmas[i], sigmas[i + 1]) for i in range(steps)])
        out["sigma_up"], out["sigma_down"] = list(ups), list(downs)
        assert out["sigma_up"][-1] == 0.0
    init = min(int(T * strength), T)
    diffusers_run = full_t[max(T - init, 0):]
    out["diffusers_img2img_timesteps"] = diffusers_run
    out["diffusers_rule_matches"] = diffusers_run == out["timesteps"]
    return out


def no_draw(*a, **k):
    raise AssertionError("EulerDiscreteScheduler drew noise (s_churn > 0?): latentcam's euler adds none")


def trajectory(kind, prediction, steps, strength, rng):
    T = latentcam_T(steps, strength)
    sched = make_scheduler(kind, prediction)
    sched.set_timesteps(T)
    start = T - steps
    sched.set_begin_index(start)
    timesteps = sched.timesteps[start:]
    sigmas = sched.sigmas[start:]
    shape = (1, 4, 2, 2)
    x0 = rng.standard_normal(shape).astype(np.float32)
    n_noise = steps if kind == "euler-ancestral" else 1
    noise = [rng.standard_normal(shape).astype(np.float32) for _ in range(n_noise)]
    outputs = [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)]
    queue = gc.NoiseQueue(noise[1:], zeros=1 if kind == "euler-ancestral" else 0)
    ea_mod.randn_tensor = queue
    euler_mod.randn_tensor = no_draw
    sample = sched.add_noise(torch.from_numpy(x0), torch.from_numpy(noise[0]), timesteps[:1])
    noisy = sample.numpy().ravel().tolist()
    inputs, prev, prev_vp, denoised = [], [], [], []
    for i, t in enumerate(timesteps):
        inputs.append(sched.scale_model_input(sample, t).numpy().ravel().tolist())
        p, d = sched.step(torch.from_numpy(outputs[i]), t, sample, return_dict=False)
        prev.append(p.numpy().ravel().tolist())
        prev_vp.append((p / (sigmas[i + 1] ** 2 + 1) ** 0.5).numpy().ravel().tolist())
        denoised.append(d.numpy().ravel().tolist())
        sample = p
    assert queue.done()
    return {"kind": kind, "prediction_type": prediction, "steps": steps, "strength": strength, "T": T,
            "timesteps": [int(t) for t in timesteps], "sigmas": [float(s) for s in sigmas], "shape": list(shape),
            "x0": x0.ravel().tolist(), "noise": [n.ravel().tolist() for n in noise],
            "model_outputs": [o.ravel().tolist() for o in outputs], "noisy": noisy, "model_inputs": inputs,
            "prev_sample": prev, "prev_vp": prev_vp, "denoised": denoised}


def scheduler_golden():
    schedules = [schedule(kind, pred, n, s) for (kind, pred), pairs in SCHEDULE_SETS.items() for n, s in pairs]
    # The VP identity latentcam relies on: scale_model_input(add_noise(x0, n, t)) = sqrt(abar) x0 + sqrt(1 - abar) n.
    rng = np.random.default_rng(7)
    trajectories = [trajectory(*spec, rng) for spec in TRAJECTORIES]
    for tr in trajectories:
        abar = float(make_scheduler("euler", "epsilon").alphas_cumprod[tr["timesteps"][0]])
        vp = np.sqrt(abar) * np.array(tr["x0"]) + np.sqrt(1 - abar) * np.array(tr["noise"][0])
        err = float(np.abs(vp - np.array(tr["model_inputs"][0])).max())
        assert err < 1e-5, f"VP identity off by {err}"
        for i in range(tr["steps"] - 1):
            assert np.allclose(tr["prev_vp"][i], tr["model_inputs"][i + 1], atol=1e-6)
    data = {"generator": "scripts/golden/euler.py", "diffusers": __import__("diffusers").__version__,
            "torch": torch.__version__, "config": {**COMMON, **EULER_EXTRA}, "schedules": schedules,
            "trajectories": trajectories}
    with open(os.path.join(OUT, "scheduler.json"), "w") as f:
        json.dump(data, f)
        f.write("\n")
    mismatch = [(s["kind"], s["steps"], s["strength"]) for s in schedules
                if not s["diffusers_rule_matches"] and s["prediction_type"] == "epsilon"]
    print(f"scheduler.json: {len(schedules)} schedules, {len(trajectories)} trajectories; diffusers' img2img rule "
          f"(int(T * s)) differs from latentcam's for (kind, steps, strength) {mismatch}")


def check_against_onnx(mods):
    """The Lightning twins' rebuilt torch UNets must be the ones their unet.onnx came from (the turbo twin's UNet and
    the shared VAEs and encoders are checked by scripts/golden/sdxl.py)."""
    rng = np.random.default_rng(0)
    for name in export_models.SDXL_TINY_EXTRA:
        sess = ort.InferenceSession(os.path.join(ROOT, "models", name, "unet.onnx"), providers=["CPUExecutionProvider"])
        feeds = {"sample": rng.standard_normal((2, 4, 8, 6)).astype(np.float32),
                 "timestep": np.array([999.0, 499.0], np.float32),
                 "encoder_hidden_states": rng.standard_normal((2, 77, 24)).astype(np.float32),
                 "text_embeds": rng.standard_normal((2, 16)).astype(np.float32),
                 "time_ids": np.array([[64, 48, 0, 0, 64, 48]] * 2, np.float32)}
        got = sess.run(None, feeds)[0]
        with torch.no_grad():
            want = mods[name]["unet"](torch.from_numpy(feeds["sample"]), torch.from_numpy(feeds["timestep"]),
                                      torch.from_numpy(feeds["encoder_hidden_states"]),
                                      added_cond_kwargs={"text_embeds": torch.from_numpy(feeds["text_embeds"]),
                                                         "time_ids": torch.from_numpy(feeds["time_ids"])}).sample
        err = float(np.abs(got - want.numpy()).max())
        print(f"{name}/unet.onnx vs torch: max |d| {err:.2e}")
        assert err < 1e-4, f"{name}: torch module differs from the committed ONNX file by {err}"


def pipeline_cases(mods):
    xl_i2i_mod.retrieve_latents = gc.retrieve_mean
    astronaut = Image.open(gc.ASTRONAUT).convert("RGB")
    rng = np.random.default_rng(2024)
    manifest = []
    for name, model, kind, prompt, negative, steps, strength, guidance, timesteps, (w, h) in CASES:
        spec = manifest_scheduler(model)
        sched_kind, prediction = spec["kind"], spec.get("prediction-type", "epsilon")
        assert spec.get("timestep-spacing") == "trailing", (model, spec)
        scheduler = make_scheduler(sched_kind, prediction)
        cls = StableDiffusionXLPipeline if kind == "txt2img" else StableDiffusionXLImg2ImgPipeline
        pipe = export_models.tiny_sdxl_pipeline(mods, model, scheduler=scheduler, cls=cls)
        n_run = len(timesteps) if timesteps is not None else steps
        ancestral_kind = sched_kind == "euler-ancestral"
        shape = (1, 4, h // 8, w // 8)
        noise = [rng.standard_normal(shape).astype(np.float32) for _ in range(n_run if ancestral_kind else 1)]
        queue = gc.NoiseQueue(noise, zeros=1 if ancestral_kind else 0)
        euler_mod.randn_tensor = no_draw
        kwargs = dict(prompt=prompt, negative_prompt=negative, guidance_scale=guidance, output_type="np")
        T = None
        if timesteps is not None:
            kwargs.update(timesteps=timesteps)
        else:
            T = steps if kind == "txt2img" else latentcam_T(steps, strength)
            kwargs.update(num_inference_steps=T)
        if kind == "txt2img":
            kwargs.update(height=h, width=w)
        else:
            kwargs.update(image=gc.input_image(OUT, name, astronaut, w, h),
                          strength=strength if timesteps is None else 1.0)
        seen = {"latents": [], "decoded": [], "denoised": [], "t": []}
        result = gc.run_recorded(pipe, kwargs, queue, (xl_mod, xl_i2i_mod, ea_mod), seen,
                                 unet=lambda sample, timestep, *a, **k: seen["t"].append(float(timestep)))
        ran = [int(t) for t in seen["t"]]
        assert all(float(t) == int(t) for t in seen["t"])
        assert len(ran) == n_run, f"{name}: the pipeline ran {ran}, not {n_run} steps"
        if timesteps is not None:
            assert ran == timesteps, (name, ran)
        else:  # txt2img runs the whole schedule: strength 1
            want = schedule(sched_kind, prediction, steps, strength if kind == "img2img" else 1.0)
            assert ran == want["timesteps"], f"{name}: diffusers ran {ran}, latentcam's rule {want['timesteps']}"
        sched = pipe.scheduler
        begin = [int(t) for t in sched.timesteps].index(ran[0])
        sigmas = [float(s) for s in sched.sigmas[begin:begin + n_run + 1]]
        assert sigmas[-1] == 0.0
        # NAME_denoised.npy, the loop's result (scaled latents, what the pipeline divides by the VAE scale and
        # decodes), checks the scheduler without the tiny VAE in between (the turbo twin's TAESD-style decoder shrinks
        # differences ~20x).
        output = gc.save_case(OUT, name, noise, result, seen)
        entry = {"name": name, "model": model, "torch_model": model, "kind": kind, "pipeline": type(pipe).__name__,
                 "scheduler": sched_kind, "prediction_type": prediction, "prompt": prompt,
                 "negative_prompt": negative, "steps": steps if timesteps is None else None,
                 "strength": strength if timesteps is None else None, "guidance": guidance, "timesteps": timesteps,
                 "num_inference_steps": T, "width": w, "height": h, "timesteps_run": ran, "sigmas_run": sigmas,
                 "noise_tensors": len(noise)}
        if ancestral_kind:
            entry["sigma_up"] = [ancestral(sched.sigmas[begin + i], sched.sigmas[begin + i + 1])[0]
                                 for i in range(n_run)]
        if kind == "txt2img":
            entry["init_noise_sigma"] = float(sched.init_noise_sigma)
        manifest.append(entry)
        print(f"{name}: {type(pipe).__name__} + {type(sched).__name__} ({prediction}) on {model}, T {T}, "
              f"timesteps {ran}, {len(noise)} noise tensors, output mean {output.mean():.4f}", flush=True)
    return manifest


def main():
    t0 = time.time()
    os.makedirs(OUT, exist_ok=True)
    scheduler_golden()
    mods = export_models.tiny_sdxl_extra_modules()
    check_against_onnx(mods)
    manifest = pipeline_cases(mods)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "scripts/golden/euler.py", "diffusers": __import__("diffusers").__version__,
                   "cases": manifest}, f, indent=1)
        f.write("\n")
    print(f"euler goldens: {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
