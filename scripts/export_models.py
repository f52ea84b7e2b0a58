#!/usr/bin/env python3
"""Export diffusion models into latentcam model folders (model.toml + ONNX files).

Modes (the torch-based ones share every export function; only where the torch modules come from differs):

  real PRESET OUT_DIR [--fp16] [--controlnet openpose]
                                 downloads a model from the Hugging Face hub (needs internet) and exports it;
                                 --fp16 also writes OUT_DIR-fp16: fp16 UNet + VAE fused for the CUDA EP;
                                 --controlnet also exports controlnet.onnx + unet_controlnet.onnx (below).
  tiny [MODELS_DIR]              builds tiny RANDOM-weight models from configs alone (no download) with exactly the
                                 real I/O names, element types and ranks; these are committed under models/ for tests.
  tiny-inpaint [MODELS_DIR]      only the tiny 9-channel inpainting twin (tiny-sd15-inpainting-lcm-lora: own unet.onnx
                                 from a seed of its own; VAE and text encoder referenced); `tiny` writes it too.
  tiny-sdxl-extra [MODELS_DIR]   the tiny SDXL-Lightning twins (Euler scheduler; 4-step epsilon, 1-step sample
                                 prediction) and the tiny SDXL ControlNet twin, from seeds of their own (`tiny-sdxl`'s
                                 folders stay byte for byte; these reference them).
  random-sd15 OUT_DIR [--fp16]   RANDOM weights with the real SD1.5 UNet / VAE (TAESD or SD VAE) / CLIP-L shapes, from
                                 configs in this file (no download): speed checks (scripts/gpu_bench.sh).
  random-sdxl OUT_DIR [--fp16]   RANDOM weights with the real SDXL UNet (2.6 B) / TAESDXL (or --vae sd: the SDXL VAE) /
                                 CLIP-L + OpenCLIP bigG shapes (no download): scripts/gpu_bench.sh --family sdxl.
                                 --no-fuse: plain fp16 conversion; --tiny: DESIGN §7's tiny SDXL twin's configs.
  fp16 SRC_DIR DST_DIR           an fp16 twin of a model folder: UNet and VAE encoder/decoder converted to float16
                                 (float16 inputs and outputs too), the text encoder and tokenizer referenced from
                                 SRC_DIR. --fuse cuda first fuses with ONNX Runtime's transformers optimizer (CUDA-only
                                 fused ops); without it the result runs anywhere (ORT's CPU EP inserts casts). Then
                                 checks the twin against SRC_DIR with ONNX Runtime (PSNR of an img2img round trip).
                                 Needs only scripts/requirements-fp16.txt (no torch).

Real presets (hub ids):
  sd15-lcm-lora        stable-diffusion-v1-5/stable-diffusion-v1-5 with latent-consistency/lcm-lora-sdv1-5 fused
  sd-turbo             stabilityai/sd-turbo
  lcm-dreamshaper-v7   SimianLuo/LCM_Dreamshaper_v7 (full LCM: the UNet takes `timestep_cond`)
  sd15-inpainting-lcm-lora  stable-diffusion-v1-5/stable-diffusion-inpainting (the mirror of the withdrawn
                       runwayml/stable-diffusion-inpainting; 9-channel UNet: `sample` = latents 4 + mask 1 +
                       masked-image latents 4) with latent-consistency/lcm-lora-sdv1-5 fused; 4 steps, guidance 4
  `--vae taesd` swaps in madebyollin/taesd (SD1 Tiny AutoEncoder) for any of them (faster, slightly softer).
  `--controlnet openpose`: lllyasviel/control_v11p_sd15_openpose (SD1.5 presets: sd15-lcm-lora, lcm-dreamshaper-v7).
SDXL presets: sdxl-lcm-lora, sdxl-turbo (euler-ancestral scheduler), lcm-sdxl, sdxl-lightning-{1,2,4,8}step
  (ByteDance/SDXL-Lightning's per-step UNet in SDXL base; euler scheduler, trailing; 1 step: sample prediction);
  `--vae taesdxl`; `--controlnet openpose` (thibaud/controlnet-openpose-sdxl-1.0) or openpose-xinsir
  (xinsir/controlnet-openpose-sdxl-1.0): controlnet.onnx + unet_controlnet.onnx with text_embeds and time_ids.

ONNX I/O names follow optimum's Stable Diffusion export, so folders made by `optimum-cli export onnx` work too:
  text_encoder.onnx  input_ids int32 [B,77]          -> last_hidden_state f32 [B,77,D], pooler_output
  unet.onnx          sample f32 [B,C,h,w], timestep, encoder_hidden_states f32 [B,77,D] (+ timestep_cond f32 [B,256])
                     -> out_sample f32 [B,C,h,w]; an inpainting UNet takes sample [B,2C+1,h,w] (latents, mask,
                     masked-image latents) and gives out_sample [B,C,h,w] (model.toml's latent-channels is C)
  vae_encoder.onnx   sample f32 [B,3,H,W]            -> latent_sample f32 [B,C,H/8,W/8] (distribution mean, unscaled)
  vae_decoder.onnx   latent_sample f32 [B,C,h,w]     -> sample f32 [B,3,8h,8w]
ControlNet (no standard export exists; these names are latentcam's; model.toml keys `controlnet`, `unet-controlnet`):
  controlnet.onnx    sample, timestep (as the UNet's), encoder_hidden_states, controlnet_cond f32 [B,3,8h,8w] (RGB 0..1,
                     not normalised: diffusers' control_image_processor), conditioning_scale f32 [] (scalar, 0..2,
                     multiplies every residual inside the graph)
                     -> down_block_res_samples_0..N-1, mid_block_res_sample (N = 12 for SD1.5, 4 for the tiny models)
  unet_controlnet.onnx  unet.onnx's inputs + down_block_additional_residuals_0..N-1, mid_block_additional_residual
                     -> out_sample (the same UNet weights as unet.onnx)
In fp16 folders every float port of the UNet and VAE is float16 (a float timestep too; an int64 one stays int64),
as `optimum-cli export onnx --fp16` makes them; the text encoder stays float32.
TAESD-family VAEs are exported in the 0..1 RGB convention of the original taesd (image-range = "zero-to-one").

Weights: a model whose weights exceed EXTERNAL_DATA_MIN_BYTES (the fp32 and fp16 SD UNets) is written as NAME.onnx
plus ONE NAME.onnx.data beside it (never one file per tensor); smaller models are one self-contained file.
"""
import argparse
import functools
import math
import os
import shutil
import sys
import tempfile
import time
import tomllib

# torch, diffusers and transformers are imported inside the functions that need them: the fp16 mode runs without.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_vocab  # noqa: E402

OPSET = 17
TIMESTEP_KINDS = ("int64-batch", "float32-batch", "float32-scalar")
# Above this many bytes of weights a model keeps them in one NAME.onnx.data file (protobuf's hard limit is 2 GiB).
EXTERNAL_DATA_MIN_BYTES = 1 << 30
FP16_ROLES = ("unet", "vae-encoder", "vae-decoder")
# Converted by `fp16` too when the folder has them (a ControlNet pair must match its UNet's float type).
FP16_CONTROLNET_ROLES = ("controlnet", "unet-controlnet")


# ----------------------------------------------------------------------------------------------------------------
# Saving ONNX files


def _weight_bytes(model):
    """Bytes of the initializers (in memory or external; Constant nodes are not counted)."""
    from onnx import helper

    total = 0
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        total += n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def save_onnx(model, path, external=None):
    """Write `model` to `path`. With external weights (default: when they exceed EXTERNAL_DATA_MIN_BYTES) every tensor
    over 1 KiB goes into ONE `<basename>.data` beside it. A stale .data file of an earlier save is removed first (onnx
    appends to an existing one)."""
    import onnx

    data_path = path + ".data"
    if os.path.exists(data_path):
        os.remove(data_path)
    if external is None:
        external = _weight_bytes(model) > EXTERNAL_DATA_MIN_BYTES
    if external:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=os.path.basename(data_path), size_threshold=1024)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(data_path, 0o666 & ~umask)  # onnx creates it 0600; give it the .onnx file's usual mode
        size = os.path.getsize(path) + os.path.getsize(data_path)
        print(f"  wrote {path} + {os.path.basename(data_path)} ({size / 1e6:.2f} MB)", flush=True)
    else:
        onnx.save(model, path)
        print(f"  wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)", flush=True)


def _remove_onnx(path):
    for p in (path, path + ".data"):
        if os.path.exists(p):
            os.remove(p)


# ----------------------------------------------------------------------------------------------------------------
# Export wrappers: fix each graph's I/O names and conventions (torch modules, built on first use).


@functools.cache
def _wrappers():
    import torch

    class TextEncoderWrap(torch.nn.Module):
        def __init__(self, text_encoder):
            super().__init__()
            self.m = text_encoder

        def forward(self, input_ids):
            out = self.m(input_ids=input_ids.to(torch.int64), return_dict=True)
            return out.last_hidden_state, out.pooler_output

    class UNetWrap(torch.nn.Module):
        def __init__(self, unet, timestep_kind):
            super().__init__()
            self.m = unet
            self.timestep_kind = timestep_kind
            self.with_cond = unet.config.time_cond_proj_dim is not None

        def forward(self, sample, timestep, encoder_hidden_states, timestep_cond=None):
            if self.timestep_kind == "float32-scalar":
                timestep = timestep.reshape(1).expand(sample.shape[0])
            return self.m(sample, timestep, encoder_hidden_states, timestep_cond=timestep_cond, return_dict=False)[0]

    class VaeEncoderWrap(torch.nn.Module):
        """AutoencoderKL: the latent distribution's mean (deterministic: no flicker from VAE sampling in video)."""

        def __init__(self, vae, zero_to_one):
            super().__init__()
            self.m = vae
            self.zero_to_one = zero_to_one

        def forward(self, sample):
            if self.zero_to_one:  # diffusers' AutoencoderTiny takes -1..1; the taesd convention is 0..1
                sample = sample * 2.0 - 1.0
            enc = self.m.encode(sample, return_dict=True)
            if hasattr(enc, "latent_dist"):
                return enc.latent_dist.mean
            return enc.latents

    class VaeDecoderWrap(torch.nn.Module):
        def __init__(self, vae, zero_to_one):
            super().__init__()
            self.m = vae
            self.zero_to_one = zero_to_one

        def forward(self, latent_sample):
            image = self.m.decode(latent_sample, return_dict=False)[0]
            if self.zero_to_one:
                image = image * 0.5 + 0.5
            return image

    class ControlNetWrap(torch.nn.Module):
        """ControlNetModel -> (down_block_res_samples_0..N-1, mid_block_res_sample), every residual already multiplied
        by `conditioning_scale` (a float32 scalar INPUT: the strength is a run-time knob, not baked into the graph).
        `controlnet_cond` is RGB in 0..1 (diffusers' control_image_processor: do_normalize=False)."""

        def __init__(self, controlnet, timestep_kind):
            super().__init__()
            self.m = controlnet
            self.timestep_kind = timestep_kind

        def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale,
                    timestep_cond=None):
            if self.timestep_kind == "float32-scalar":
                timestep = timestep.reshape(1).expand(sample.shape[0])
            down, mid = self.m(sample, timestep, encoder_hidden_states, controlnet_cond,
                               conditioning_scale=conditioning_scale, timestep_cond=timestep_cond, return_dict=False)
            return (*down, mid)

    class UNetControlNetWrap(UNetWrap):
        """The UNet with ControlNet residuals as inputs: sample, timestep, encoder_hidden_states, [timestep_cond],
        down_block_additional_residuals_0..N-1, mid_block_additional_residual (added as diffusers adds them)."""

        def __init__(self, unet, timestep_kind, n_down):
            super().__init__(unet, timestep_kind)
            self.n_down = n_down

        def forward(self, sample, timestep, encoder_hidden_states, *rest):
            timestep_cond = None
            if self.with_cond:
                timestep_cond, rest = rest[0], rest[1:]
            assert len(rest) == self.n_down + 1, (len(rest), self.n_down)
            if self.timestep_kind == "float32-scalar":
                timestep = timestep.reshape(1).expand(sample.shape[0])
            return self.m(sample, timestep, encoder_hidden_states, timestep_cond=timestep_cond,
                          down_block_additional_residuals=tuple(rest[:-1]), mid_block_additional_residual=rest[-1],
                          return_dict=False)[0]

    class TextEncoderXLWrap(torch.nn.Module):
        """An SDXL text encoder with every output latentcam and optimum name: `last_hidden_state`, the pooled output
        (`pooler_output` of CLIPTextModel, `text_embeds` of CLIPTextModelWithProjection), then `hidden_states.0..L`
        (the embeddings' output and each layer's; no final LayerNorm). optimum's order (`optimum=True`) puts
        CLIPTextModelWithProjection's `text_embeds` first."""

        def __init__(self, text_encoder, optimum=False):
            super().__init__()
            self.m = text_encoder
            self.pooled = "text_embeds" if hasattr(text_encoder, "text_projection") else "pooler_output"
            self.pooled_first = optimum and self.pooled == "text_embeds"

        def forward(self, input_ids):
            out = self.m(input_ids=input_ids, output_hidden_states=True, return_dict=True)
            pooled = getattr(out, self.pooled)
            head = (pooled, out.last_hidden_state) if self.pooled_first else (out.last_hidden_state, pooled)
            return (*head, *out.hidden_states)

    class UNetXLWrap(torch.nn.Module):
        """A UNet with optimum's ports, in optimum's order: sample, timestep, encoder_hidden_states, [timestep_cond],
        [text_embeds, time_ids] (SDXL: addition_embed_type "text_time") -> out_sample. The timestep goes to diffusers
        as given: [B], or 0-d as optimum exports it (diffusers broadcasts it over the batch)."""

        def __init__(self, unet):
            super().__init__()
            self.m = unet
            self.with_cond = unet.config.time_cond_proj_dim is not None
            self.text_time = unet.config.addition_embed_type == "text_time"

        def forward(self, sample, timestep, encoder_hidden_states, *rest):
            timestep_cond = rest[0] if self.with_cond else None
            added = None
            if self.text_time:
                added = {"text_embeds": rest[-2], "time_ids": rest[-1]}
            return self.m(sample, timestep, encoder_hidden_states, timestep_cond=timestep_cond,
                          added_cond_kwargs=added, return_dict=False)[0]

    class VaeEncoderParamsWrap(torch.nn.Module):
        """optimum's VAE encoder: `latent_parameters` = the latent distribution's parameters [B, 2C, h, w] (mean, then
        log-variance; the mean is the first C channels)."""

        def __init__(self, vae):
            super().__init__()
            self.m = vae

        def forward(self, sample):
            return self.m.encode(sample, return_dict=True).latent_dist.parameters

    return {"TextEncoderWrap": TextEncoderWrap, "UNetWrap": UNetWrap, "VaeEncoderWrap": VaeEncoderWrap,
            "VaeDecoderWrap": VaeDecoderWrap, "ControlNetWrap": ControlNetWrap,
            "UNetControlNetWrap": UNetControlNetWrap, "TextEncoderXLWrap": TextEncoderXLWrap,
            "UNetXLWrap": UNetXLWrap, "VaeEncoderParamsWrap": VaeEncoderParamsWrap}


def __getattr__(name):  # export_models.UNetWrap etc. still work for importers; torch loads on first use
    if name in ("TextEncoderWrap", "UNetWrap", "VaeEncoderWrap", "VaeDecoderWrap", "ControlNetWrap",
                "UNetControlNetWrap"):
        return _wrappers()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _export(module, args, path, input_names, output_names, dynamic_axes, opset=OPSET):
    """torch.onnx.export into a scratch folder beside `path`, then move the result into place. A model over 2 GiB,
    which torch writes as one external file per tensor (~390 for an fp32 SD UNet), is re-saved with ONE .data file."""
    import onnx
    import torch

    folder = os.path.dirname(os.path.abspath(path))
    scratch = tempfile.mkdtemp(prefix=".export-", dir=folder)
    try:
        tmp = os.path.join(scratch, os.path.basename(path))
        module.eval()
        with torch.no_grad():
            torch.onnx.export(
                module,
                args,
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        _remove_onnx(path)
        if os.listdir(scratch) == [os.path.basename(path)] and os.path.getsize(tmp) <= EXTERNAL_DATA_MIN_BYTES:
            os.replace(tmp, path)  # one self-contained file, byte for byte what torch wrote
            print(f"  wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)", flush=True)
        else:
            save_onnx(onnx.load(tmp), path, external=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def export_text_encoder(text_encoder, path):
    import torch

    ids = torch.zeros(1, 77, dtype=torch.int32)
    _export(
        _wrappers()["TextEncoderWrap"](text_encoder),
        (ids,),
        path,
        ["input_ids"],
        ["last_hidden_state", "pooler_output"],
        {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}, "pooler_output": {0: "batch"}},
    )


def export_unet(unet, path, timestep_kind, latent_hw=8):
    import torch

    cfg = unet.config
    batch = 2  # classifier-free guidance runs batch 2; the batch axis stays dynamic
    sample = torch.randn(batch, cfg.in_channels, latent_hw, latent_hw)
    ehs = torch.randn(batch, 77, cfg.cross_attention_dim)
    if timestep_kind == "int64-batch":
        timestep = torch.full((batch,), 499, dtype=torch.int64)
    elif timestep_kind == "float32-batch":
        timestep = torch.full((batch,), 499.0)
    else:
        timestep = torch.tensor(499.0)
    names = ["sample", "timestep", "encoder_hidden_states"]
    args = [sample, timestep, ehs]
    axes = {
        "sample": {0: "batch", 2: "height", 3: "width"},
        "encoder_hidden_states": {0: "batch"},
        "out_sample": {0: "batch", 2: "height", 3: "width"},
    }
    if timestep_kind != "float32-scalar":
        axes["timestep"] = {0: "batch"}
    if cfg.time_cond_proj_dim is not None:
        names.append("timestep_cond")
        args.append(torch.randn(batch, cfg.time_cond_proj_dim))
        axes["timestep_cond"] = {0: "batch"}
    _export(_wrappers()["UNetWrap"](unet, timestep_kind), tuple(args), path, names, ["out_sample"], axes)


def _timestep_example(timestep_kind, batch):
    import torch

    if timestep_kind == "int64-batch":
        return torch.full((batch,), 499, dtype=torch.int64)
    if timestep_kind == "float32-batch":
        return torch.full((batch,), 499.0)
    return torch.tensor(499.0)


CONTROLNET_DOWN = "down_block_res_samples_{}"
CONTROLNET_MID = "mid_block_res_sample"
UNET_DOWN = "down_block_additional_residuals_{}"
UNET_MID = "mid_block_additional_residual"


def export_controlnet_pair(controlnet, unet, folder, timestep_kind, latent_hw=8,
                           controlnet_file="controlnet.onnx", unet_file="unet_controlnet.onnx"):
    """controlnet.onnx + unet_controlnet.onnx (the UNet `unet` with the residual inputs), both with dynamic batch,
    height and width; the timestep input has the form `timestep_kind` in both (as unet.onnx).

      controlnet.onnx       sample f32 [B,C,h,w], timestep, encoder_hidden_states f32 [B,77,D],
                            controlnet_cond f32 [B,3,8h,8w] (RGB 0..1), conditioning_scale f32 [] (scalar)
                            (+ timestep_cond f32 [B,256] only if the ControlNet itself has time_cond_proj_dim)
                            -> down_block_res_samples_0..N-1 f32 [B,c_i,h_i,w_i], mid_block_res_sample f32 [B,c,h',w']
      unet_controlnet.onnx  unet.onnx's inputs + down_block_additional_residuals_0..N-1, mid_block_additional_residual
                            (the shapes above) -> out_sample f32 [B,C,h,w]
    N = 1 + sum over down blocks of (layers_per_block + 1 if the block downsamples): 12 for SD1.5; the tiny models'
    two-block UNet has 4. Every residual is already scaled by conditioning_scale; the UNet adds them unscaled."""
    import torch

    if controlnet.config.cross_attention_dim != unet.config.cross_attention_dim or \
            tuple(controlnet.config.block_out_channels) != tuple(unet.config.block_out_channels):
        raise SystemExit(f"ControlNet (cross_attention_dim {controlnet.config.cross_attention_dim}, blocks "
                         f"{tuple(controlnet.config.block_out_channels)}) does not fit the UNet "
                         f"({unet.config.cross_attention_dim}, {tuple(unet.config.block_out_channels)})")
    cfg = unet.config
    batch = 2  # classifier-free guidance runs batch 2; the batch axis stays dynamic
    gen = torch.Generator().manual_seed(0)  # example inputs only; the global RNG (module weights) is untouched
    sample = torch.randn(batch, cfg.in_channels, latent_hw, latent_hw, generator=gen)
    ehs = torch.randn(batch, 77, cfg.cross_attention_dim, generator=gen)
    cond = torch.rand(batch, 3, 8 * latent_hw, 8 * latent_hw, generator=gen)
    scale = torch.tensor(1.0)
    timestep = _timestep_example(timestep_kind, batch)
    n_down = len(controlnet.controlnet_down_blocks)
    lat_axes = {0: "batch", 2: "height", 3: "width"}

    c_names = ["sample", "timestep", "encoder_hidden_states", "controlnet_cond", "conditioning_scale"]
    c_args = [sample, timestep, ehs, cond, scale]
    c_axes = {"sample": lat_axes, "encoder_hidden_states": {0: "batch"},
              "controlnet_cond": {0: "batch", 2: "image_height", 3: "image_width"}}
    if timestep_kind != "float32-scalar":
        c_axes["timestep"] = {0: "batch"}
    if getattr(controlnet.config, "time_cond_proj_dim", None) is not None:
        c_names.append("timestep_cond")
        c_args.append(torch.randn(batch, controlnet.config.time_cond_proj_dim, generator=gen))
        c_axes["timestep_cond"] = {0: "batch"}
    res_axes = [{0: "batch", 2: f"res_height_{i}", 3: f"res_width_{i}"} for i in range(n_down)]
    mid_axes = {0: "batch", 2: "mid_height", 3: "mid_width"}
    c_out = [CONTROLNET_DOWN.format(i) for i in range(n_down)] + [CONTROLNET_MID]
    for i in range(n_down):
        c_axes[CONTROLNET_DOWN.format(i)] = res_axes[i]
    c_axes[CONTROLNET_MID] = mid_axes
    wrap = _wrappers()["ControlNetWrap"](controlnet, timestep_kind).eval()
    _export(wrap, tuple(c_args), os.path.join(folder, controlnet_file), c_names, c_out, c_axes)

    with torch.no_grad():
        residuals = wrap(*c_args)
    u_names = ["sample", "timestep", "encoder_hidden_states"]
    u_args = [sample, timestep, ehs]
    u_axes = {"sample": lat_axes, "encoder_hidden_states": {0: "batch"}, "out_sample": lat_axes}
    if timestep_kind != "float32-scalar":
        u_axes["timestep"] = {0: "batch"}
    if cfg.time_cond_proj_dim is not None:
        u_names.append("timestep_cond")
        u_args.append(torch.randn(batch, cfg.time_cond_proj_dim, generator=gen))
        u_axes["timestep_cond"] = {0: "batch"}
    for i in range(n_down):
        u_names.append(UNET_DOWN.format(i))
        u_axes[UNET_DOWN.format(i)] = res_axes[i]
    u_names.append(UNET_MID)
    u_axes[UNET_MID] = mid_axes
    u_args += list(residuals)
    _export(_wrappers()["UNetControlNetWrap"](unet, timestep_kind, n_down), tuple(u_args),
            os.path.join(folder, unet_file), u_names, ["out_sample"], u_axes)
    return {"controlnet": controlnet_file, "unet-controlnet": unet_file}


def export_vae(vae, folder, zero_to_one, image_hw=64):
    import torch

    image = torch.rand(1, 3, image_hw, image_hw)
    if not zero_to_one:
        image = image * 2 - 1
    img_axes = {0: "batch", 2: "height", 3: "width"}
    lat_axes = {0: "batch", 2: "latent_height", 3: "latent_width"}
    enc = _wrappers()["VaeEncoderWrap"](vae, zero_to_one)
    _export(enc, (image,), os.path.join(folder, "vae_encoder.onnx"), ["sample"], ["latent_sample"],
            {"sample": img_axes, "latent_sample": lat_axes})
    with torch.no_grad():
        latent = enc(image)
    _export(_wrappers()["VaeDecoderWrap"](vae, zero_to_one), (latent,), os.path.join(folder, "vae_decoder.onnx"),
            ["latent_sample"], ["sample"], {"latent_sample": lat_axes, "sample": img_axes})


# ----------------------------------------------------------------------------------------------------------------
# Model folders


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def unet_memory(config):
    """model.toml's [unet]: the heads of the UNet's first self-attention and its down level (what latentcam's memory
    estimate needs: that attention's tokens x tokens scores dominate). diffusers names SD1/SD2 heads
    `attention_head_dim` (an int, or one per block)."""
    types = list(config["down_block_types"])
    level = next((i for i, t in enumerate(types) if "CrossAttn" in t), 0)
    heads = config.get("num_attention_heads") or config["attention_head_dim"]
    if isinstance(heads, (list, tuple)):
        heads = heads[level]
    return {"attention-heads": int(heads), "attention-level": level}


def write_manifest(folder, *, name, description, latent_channels, latent_scale, image_range, files, pad_token,
                   defaults, size_multiple, native_size, unet, scheduler=None, family="sd", vae_fp32_only=False,
                   pad_token_2=None, sdxl=None):
    """native_size: the side the real model was trained at (tiny twins declare their real counterpart's);
    unet: the UNet's config, for [unet]. SDXL: family="sdxl", pad_token_2 ([tokenizer-2]: the second tokenizer's
    pad token) and sdxl (the [sdxl] table); vae_fp32_only marks a VAE that overflows in fp16 (SDXL's original).
    The defaults (family "sd", no mark) are not written: an SD folder's manifest is what it always was."""
    lines = [f"# Written by scripts/export_models.py. {description}", f"name = {_toml_value(name)}",
             f"description = {_toml_value(description)}"]
    if family != "sd":
        lines.append(f"family = {_toml_value(family)}")
    lines += [f"latent-channels = {latent_channels}",
              f"latent-scale = {_toml_value(latent_scale)}", f"image-range = {_toml_value(image_range)}",
              f"size-multiple = {size_multiple}", f"native-size = {native_size}"]
    if vae_fp32_only:
        lines.append("vae-fp32-only = true")
    lines += ["", "[files]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in files.items()]
    lines += ["", "[unet]"] + [f"{k} = {_toml_value(v)}" for k, v in unet_memory(unet).items()]
    lines += ["", "[tokenizer]", f"pad-token = {_toml_value(pad_token)}"]
    if pad_token_2 is not None:
        lines += ["", "[tokenizer-2]", f"pad-token = {_toml_value(pad_token_2)}"]
    if sdxl:
        lines += ["", "[sdxl]"] + [f"{k} = {_toml_value(v)}" for k, v in sdxl.items()]
    scheduler = dict(scheduler or {})
    lines += ["", "[scheduler]", f"kind = {_toml_value(scheduler.pop('kind', 'lcm'))}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in scheduler.items()]
    lines += ["", "[defaults]"] + [f"{k} = {_toml_value(v)}" for k, v in defaults.items()]
    with open(os.path.join(folder, "model.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"  wrote {os.path.join(folder, 'model.toml')}", flush=True)


def read_manifest(folder):
    with open(os.path.join(folder, "model.toml"), "rb") as f:
        return tomllib.load(f)


def write_manifest_dict(folder, manifest, comment):
    """A parsed model.toml written back (top-level keys, then one [table] per dict), with `comment` on top."""
    lines = [f"# {comment}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in manifest.items() if not isinstance(v, dict)]
    for table, values in manifest.items():
        if isinstance(values, dict):
            lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    with open(os.path.join(folder, "model.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"  wrote {os.path.join(folder, 'model.toml')}", flush=True)


def save_tokenizer(tokenizer, path):
    tokenizer.backend_tokenizer.save(path, pretty=False)
    print(f"  wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# fp16 twins


def _patch_ort_attention_fusion_for_numpy2():
    """ONNX Runtime 1.31's UNet/VAE attention fusions call int() on a shape-[1] array, which numpy 2 refuses
    (TypeError): the fusion then dies. Same logic, reading the one element explicitly."""
    import importlib

    import numpy as np
    import onnxruntime.transformers.optimizer  # noqa: F401  (puts onnxruntime/transformers on sys.path)

    def modules(name):  # the optimizer imports its modules by bare name too: patch both copies
        found = set()
        for full in (f"onnxruntime.transformers.{name}", name):
            try:
                found.add(importlib.import_module(full))
            except ImportError:
                pass
        return found

    def _one_int(value):
        if isinstance(value, np.ndarray) and value.size == 1:
            return int(value.reshape(-1)[0])
        return 0

    def unet_num_heads(self, reshape_q, is_torch2=False):
        if is_torch2:  # shape given as Concat(0, 0, num_heads, head_size)
            parent = self.model.get_parent(reshape_q, 1)
            if parent is not None and parent.op_type == "Concat" and len(parent.input) == 4:
                return max(_one_int(self.model.get_constant_value(parent.input[2])), 0)
            return 0
        shape = self.model.get_constant_value(reshape_q.input[1])
        if isinstance(shape, np.ndarray) and list(shape.shape) == [4]:
            return max(int(shape[2]), 0)
        return 0

    def vae_num_heads_and_hidden_size(self, reshape_q, add_q):
        concat = self.model.get_parent(reshape_q, 1)
        if concat is None or len(concat.input) != 4:
            return self.num_heads, self.hidden_size
        num_heads = _one_int(self.model.get_constant_value(concat.input[2]))
        _, bias = self.model.get_constant_input(add_q)
        if num_heads <= 0 or not isinstance(bias, np.ndarray) or bias.ndim != 1:
            return self.num_heads, self.hidden_size
        return num_heads, bias.shape[0]

    for mod in modules("fusion_attention_unet"):
        if hasattr(getattr(mod, "FusionAttentionUnet", None), "get_num_heads"):
            mod.FusionAttentionUnet.get_num_heads = unet_num_heads
    for mod in modules("fusion_attention_vae"):
        if hasattr(getattr(mod, "FusionAttentionVae", None), "get_num_heads_and_hidden_size"):
            mod.FusionAttentionVae.get_num_heads_and_hidden_size = vae_num_heads_and_hidden_size


def _fused_fp16(src, model_type):
    """ONNX Runtime's transformers optimizer (fusions for the CUDA EP: attention, GroupNorm, BiasSplitGelu, ...),
    then float16 with float16 graph inputs and outputs. Mirrors what ORT's own SD demo does for CUDA."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    _patch_ort_attention_fusion_for_numpy2()
    options = FusionOptions(model_type)
    try:
        m = optimize_model(src, model_type=model_type, num_heads=0, hidden_size=0, opt_level=0,
                           optimization_options=options, use_gpu=True)
    except Exception as e:  # an exporter's attention pattern the fusion does not know: fuse the rest
        print(f"  attention fusion failed ({type(e).__name__}: {str(e)[:160]}); fusing without it", flush=True)
        options.enable_attention = False
        m = optimize_model(src, model_type=model_type, num_heads=0, hidden_size=0, opt_level=0,
                           optimization_options=options, use_gpu=True)
    stats = {k: v for k, v in m.get_fused_operator_statistics().items() if v}
    print(f"  fused ({model_type}): {stats}", flush=True)
    m.convert_float_to_float16(keep_io_types=False, op_block_list=["RandomNormalLike"])
    m.topological_sort()
    model = m.model
    # The fused ops live in the com.microsoft domain; say so in the opset imports (ORT would assume version 1).
    if any(n.domain == "com.microsoft" for n in model.graph.node) and \
            not any(o.domain == "com.microsoft" for o in model.opset_import):
        from onnx import helper

        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def _plain_fp16(src, op_block_list):
    """Every float tensor to float16, graph inputs and outputs included; ops without a float16 CPU kernel get casts
    from ONNX Runtime at load. ONNX Runtime's own converter (onnxruntime.transformers.float16, also what the fused path
    uses): onnxconverter-common 1.16.0 retypes a Cast(to=FLOAT)'s output as float16 but leaves its `to` attribute,
    and ONNX Runtime then refuses the model ("Type (tensor(float16)) of output arg ... does not match")."""
    from onnxruntime.transformers import float16

    blocks = list(float16.DEFAULT_OP_BLOCK_LIST) + list(op_block_list)
    # Given a path, the converter infers shapes through a file (onnx.shape_inference.infer_shapes_path): models over
    # protobuf's 2 GiB limit (an fp32 SD UNet) convert too.
    return float16.convert_float_to_float16(src, keep_io_types=False, op_block_list=blocks)


def convert_folder_fp16(src, dst, fuse=None, op_block_list=(), name=None, vae_src=None):
    """An fp16 twin of model folder `src` in `dst`: UNet + VAE encoder/decoder (and a ControlNet + ControlNet-UNet
    pair, when `src` has one) converted, the rest (text encoders, tokenizers) referenced from `src` by relative path.
    fuse: None (plain, runs on any EP) or "cuda".
    A VAE marked `vae-fp32-only` (SDXL's original VAE overflows in fp16) is not converted: the twin references it
    in fp32 and keeps the mark, unless `vae_src` names a folder whose vae_encoder.onnx / vae_decoder.onnx hold an
    fp16-safe VAE with the same latents (madebyollin/sdxl-vae-fp16-fix for SDXL): those are converted instead and
    the mark is dropped."""
    src, dst = os.path.abspath(src), os.path.abspath(dst)
    manifest = read_manifest(src)
    os.makedirs(dst, exist_ok=True)
    files = dict(manifest["files"])
    fp32_vae = bool(manifest.get("vae-fp32-only", False)) and vae_src is None
    vae_override = {}
    if vae_src is not None:
        vae_override = {"vae-encoder": os.path.join(os.path.abspath(vae_src), "vae_encoder.onnx"),
                        "vae-decoder": os.path.join(os.path.abspath(vae_src), "vae_decoder.onnx")}
        manifest.pop("vae-fp32-only", None)
    for role, rel in manifest["files"].items():
        path = vae_override.get(role, os.path.normpath(os.path.join(src, rel)))
        if fp32_vae and role.startswith("vae"):
            print(f"{role}: {path} stays float32 (vae-fp32-only: it overflows in float16)", flush=True)
            files[role] = os.path.relpath(path, dst)
        elif role in FP16_ROLES or role in FP16_CONTROLNET_ROLES:
            out_name = os.path.basename(rel)
            t = time.time()
            print(f"{role}: {path} -> fp16{' fused' if fuse else ''}", flush=True)
            model = (_fused_fp16(path, "vae" if role.startswith("vae") else "unet") if fuse
                     else _plain_fp16(path, op_block_list))
            save_onnx(model, os.path.join(dst, out_name))
            print(f"  {time.time() - t:.1f}s", flush=True)
            files[role] = out_name
        else:
            files[role] = os.path.relpath(path, dst)
    manifest["files"] = files
    manifest["name"] = name or os.path.basename(dst)
    how = ("fused by ONNX Runtime's transformers optimizer for the CUDA EP (contrib ops: CUDA only), " if fuse
           else "plain conversion (runs on any EP), ")
    desc = manifest.get("description", "")
    what = "UNet, VAE and ControlNet" if "controlnet" in files else "UNet and VAE"
    if fp32_vae:
        what = "UNet (the VAE stays float32: vae-fp32-only)"
    text = "text encoders" if "text-encoder-2" in files else "text encoder"
    vae_note = ""
    if vae_src is not None and os.path.abspath(vae_src) != src:
        vae_note = f"VAE from {os.path.basename(os.path.abspath(vae_src))} (fp16-safe, same latents). "
    elif vae_src is not None:
        vae_note = "Its VAE stands in for an fp16-safe one (random weights do not overflow). "
    manifest["description"] = (f"FLOAT16 twin of {os.path.basename(src)}: {what} in float16 with float16 "
                               f"inputs/outputs, {how}{text} float32. " + vae_note + desc)
    write_manifest_dict(dst, manifest, f"Written by scripts/export_models.py fp16 from {os.path.basename(src)}.")
    return manifest


# ----------------------------------------------------------------------------------------------------------------
# fp16 check: the twin against its source, with ONNX Runtime on the CPU


def _lcm_scalars(t, num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012):
    """alphas_cumprod[t] (scaled_linear betas, float64) and LCM's boundary c_skip, c_out (timestep_scaling 10)."""
    import numpy as np

    betas = np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=np.float64) ** 2
    a = float(np.cumprod(1.0 - betas)[t])
    st = t * 10.0
    return a, 0.25 / (st * st + 0.25), st / math.sqrt(st * st + 0.25)


class _Model:
    """One ONNX session fed by port name, converting inputs to whatever element type the model declares."""

    def __init__(self, path):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.types = {i.name: i.type for i in self.s.get_inputs()}
        self.shapes = {i.name: i.shape for i in self.s.get_inputs()}

    def signature(self):
        ins = ", ".join(f"{i.name}: {i.type}{i.shape}" for i in self.s.get_inputs())
        outs = ", ".join(f"{o.name}: {o.type}{o.shape}" for o in self.s.get_outputs())
        return f"({ins}) -> ({outs})"

    def one(self, x):
        """A single-input model (a VAE: `sample`, `latent_sample`, or taesd-style `image` / `latent`)."""
        return self(**{self.s.get_inputs()[0].name: x})

    def __call__(self, **feeds):
        import numpy as np

        np_types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                    "tensor(int32)": np.int32, "tensor(double)": np.float64}
        cast = {k: np.asarray(v).astype(np_types[self.types[k]]) for k, v in feeds.items() if k in self.types}
        return self.s.run(None, cast)[0].astype(np.float64)


def _psnr(a, b, peak=1.0):
    import numpy as np

    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse)


def _rel(a, b):
    import numpy as np

    return float(np.sqrt(np.mean((a - b) ** 2)) / (np.sqrt(np.mean(b ** 2)) + 1e-12))


def check_fp16(src, dst, size=256, strength_t=499, seed=0):
    """Runs the fp32 folder `src` and its fp16 twin `dst` on the same random inputs with ONNX Runtime's CPU EP and
    prints each model's error and the PSNR of a whole 1-step LCM img2img round trip (encode, noise to t, UNet, LCM
    step, decode) over the decoded image in 0..1. Returns the dict of numbers."""
    import numpy as np

    m32, m16 = read_manifest(src), read_manifest(dst)
    rng = np.random.default_rng(seed)
    models = {}
    for tag, folder, man in (("fp32", src, m32), ("fp16", dst, m16)):
        models[tag] = {role: _Model(os.path.normpath(os.path.join(folder, man["files"][role]))) for role in FP16_ROLES}
    for role in FP16_ROLES:
        print(f"  {role} fp32 {models['fp32'][role].signature()}", flush=True)
        print(f"  {role} fp16 {models['fp16'][role].signature()}", flush=True)
    zero_to_one = m32["image-range"] == "zero-to-one"
    scale = float(m32["latent-scale"])
    channels = int(m32["latent-channels"])
    unet32 = models["fp32"]["unet"]
    ctx_dim = unet32.shapes["encoder_hidden_states"][2]
    if not isinstance(ctx_dim, int):
        raise SystemExit("encoder_hidden_states has no static width; cannot make random prompt embeddings")
    lat = size // 8

    # A random image with structure (smooth colour field + noise), and random prompt embeddings at CLIP's scale.
    yy, xx = np.mgrid[0:size, 0:size] / size
    image01 = np.stack([0.5 + 0.4 * np.sin(6 * xx + 2 * c) * np.cos(5 * yy - c) for c in range(3)])[None]
    image01 = np.clip(image01 + 0.05 * rng.standard_normal(image01.shape), 0, 1)
    image = image01 if zero_to_one else image01 * 2 - 1
    ehs = rng.standard_normal((1, 77, ctx_dim))
    noise = rng.standard_normal((1, channels, lat, lat))
    latent_in = rng.standard_normal((1, channels, lat, lat))
    pooled = None
    if "text_embeds" in unet32.shapes:  # drawn after the SD inputs: an SD folder's check is unchanged
        pooled = rng.standard_normal((1, unet32.shapes["text_embeds"][1]))
    a, c_skip, c_out = _lcm_scalars(strength_t)
    res = {}

    def timestep_feed(model):
        shape = model.shapes["timestep"]
        return np.full((1,), strength_t) if len(shape) == 1 else np.array(float(strength_t))

    def unet_feeds(model, sample):
        feeds = dict(sample=sample, timestep=timestep_feed(model), encoder_hidden_states=ehs)
        if "timestep_cond" in model.types:
            feeds["timestep_cond"] = np.zeros((1, model.shapes["timestep_cond"][1]))
        if "text_embeds" in model.types:  # SDXL: the pooled embedding and time_ids [H, W, 0, 0, H, W]
            feeds["text_embeds"] = pooled
            feeds["time_ids"] = np.array([[size, size, 0, 0, size, size]], np.float64)
        return feeds

    def to01(x):
        return np.clip(x if zero_to_one else x * 0.5 + 0.5, 0, 1)

    out = {}
    for tag in ("fp32", "fp16"):
        m = models[tag]
        enc = m["vae-encoder"].one(image)
        eps_rand = m["unet"](**unet_feeds(m["unet"], latent_in))
        dec_rand = to01(m["vae-decoder"].one(latent_in))
        x = enc * scale
        noisy = math.sqrt(a) * x + math.sqrt(1 - a) * noise
        eps = m["unet"](**unet_feeds(m["unet"], noisy))
        x0 = (noisy - math.sqrt(1 - a) * eps) / math.sqrt(a)
        denoised = c_out * x0 + c_skip * noisy
        img = to01(m["vae-decoder"].one(denoised / scale))
        rt0 = to01(m["vae-decoder"].one(enc))  # strength 0: a plain VAE round trip
        out[tag] = dict(enc=enc, eps_rand=eps_rand, dec_rand=dec_rand, img=img, rt0=rt0)
    o32, o16 = out["fp32"], out["fp16"]
    res["vae_encoder_rel_rms"] = _rel(o16["enc"], o32["enc"])
    res["unet_rel_rms"] = _rel(o16["eps_rand"], o32["eps_rand"])
    res["unet_max_abs"] = float(np.max(np.abs(o16["eps_rand"] - o32["eps_rand"])))
    res["vae_decoder_psnr_db"] = _psnr(o16["dec_rand"], o32["dec_rand"])
    res["vae_round_trip_psnr_db"] = _psnr(o16["rt0"], o32["rt0"])
    res["img2img_psnr_db"] = _psnr(o16["img"], o32["img"])
    res["img2img_fp32_image_std"] = float(np.std(o32["img"]))
    res["size"] = size
    res["timestep"] = strength_t
    print(f"fp16 vs fp32 at {size}x{size} (latents {lat}x{lat}), ONNX Runtime CPU EP:", flush=True)
    print(f"  VAE encoder  relative RMS error {res['vae_encoder_rel_rms']:.2e}", flush=True)
    print(f"  UNet         relative RMS error {res['unet_rel_rms']:.2e} (max |d| {res['unet_max_abs']:.2e})",
          flush=True)
    print(f"  VAE decoder  PSNR {res['vae_decoder_psnr_db']:.1f} dB (random latents, image in 0..1)", flush=True)
    print(f"  VAE round trip (strength 0)      PSNR {res['vae_round_trip_psnr_db']:.1f} dB", flush=True)
    print(f"  img2img 1 step LCM (t={strength_t})  PSNR {res['img2img_psnr_db']:.1f} dB "
          f"(fp32 output's std {res['img2img_fp32_image_std']:.3f})", flush=True)
    return res


# ----------------------------------------------------------------------------------------------------------------
# Real models (hub)

PRESETS = {
    "sd15-lcm-lora": dict(repo="stable-diffusion-v1-5/stable-diffusion-v1-5", lora="latent-consistency/lcm-lora-sdv1-5",
                          pad="<|endoftext|>", defaults=dict(steps=2, strength=0.5, guidance=1.0)),
    "sd-turbo": dict(repo="stabilityai/sd-turbo", lora=None, pad="!",
                     defaults=dict(steps=1, strength=0.5, guidance=1.0)),
    "lcm-dreamshaper-v7": dict(repo="SimianLuo/LCM_Dreamshaper_v7", lora=None, pad="<|endoftext|>",
                               defaults=dict(steps=2, strength=0.5, guidance=1.2)),
    # The 9-channel inpainting UNet (DESIGN §8) with LCM-LoRA: the seed's recipe, 4 steps at guidance 4, strength 1
    # (diffusers starts from pure noise and takes the image only through the masked-image latents). runwayml's repo
    # is gone from the hub; stable-diffusion-v1-5/ holds the same files (as for sd15-lcm-lora).
    "sd15-inpainting-lcm-lora": dict(repo="stable-diffusion-v1-5/stable-diffusion-inpainting",
                                     lora="latent-consistency/lcm-lora-sdv1-5", pad="<|endoftext|>", inpaint=True,
                                     defaults=dict(steps=4, strength=1.0, guidance=4.0)),
}


# `real ... --controlnet NAME`: hub id, and the presets whose UNet it fits (SD1.5 architecture, CLIP-L 768).
CONTROLNETS = {
    "openpose": dict(repo="lllyasviel/control_v11p_sd15_openpose", presets=("sd15-lcm-lora", "lcm-dreamshaper-v7")),
}


def fp16_folder_for(out):
    return os.path.normpath(os.path.abspath(out)) + "-fp16"


def _from_hub(what, load):
    """load() (a from_pretrained or a download), turning a failed download into a clear SystemExit."""
    try:
        return load()
    except Exception as e:  # noqa: BLE001 - only download and hub errors are translated, the rest re-raised
        hub = isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("huggingface_hub", "httpx", "requests",
                                                                            "urllib3")
        if not hub:
            raise
        raise SystemExit(f"could not download {what} from the Hugging Face hub: {type(e).__name__}: {str(e)[:400]}\n"
                         "`real` exports need internet access to huggingface.co once (or the files in the local "
                         "Hugging Face cache). The tiny random test twins need none: `export_models.py tiny`.") from e


def export_real(preset, out, vae_choice, timestep_kind, fp16=False, controlnet=None):
    import torch
    from diffusers import AutoencoderTiny, StableDiffusionInpaintPipeline, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    p = PRESETS[preset]
    if controlnet is not None and preset not in CONTROLNETS[controlnet]["presets"]:
        raise SystemExit(f"--controlnet {controlnet} ({CONTROLNETS[controlnet]['repo']}) fits "
                         f"{', '.join(CONTROLNETS[controlnet]['presets'])}, not {preset}")
    # An inpainting repo (9-channel UNet) is loaded as what its model_index.json names.
    cls = StableDiffusionInpaintPipeline if p.get("inpaint") else StableDiffusionPipeline
    pipe = _from_hub(p["repo"], lambda: cls.from_pretrained(p["repo"], torch_dtype=torch.float32,
                                                            safety_checker=None))
    os.makedirs(out, exist_ok=True)
    if p.get("inpaint") and pipe.unet.config.in_channels != 2 * pipe.vae.config.latent_channels + 1:
        raise SystemExit(f"{p['repo']}: the UNet takes {pipe.unet.config.in_channels} channels, not the inpainting "
                         f"UNet's {2 * pipe.vae.config.latent_channels + 1}")
    if p["lora"]:
        _from_hub(p["lora"], lambda: pipe.load_lora_weights(p["lora"]))
        pipe.fuse_lora()
        pipe.unload_lora_weights()  # keeps the fused weights, drops the adapter layers from the graph
    export_text_encoder(pipe.text_encoder, os.path.join(out, "text_encoder.onnx"))
    export_unet(pipe.unet, os.path.join(out, "unet.onnx"), timestep_kind, latent_hw=64)
    controlnet_files = {}
    if controlnet is not None:
        from diffusers import ControlNetModel

        cn = _from_hub(CONTROLNETS[controlnet]["repo"], lambda: ControlNetModel.from_pretrained(
            CONTROLNETS[controlnet]["repo"], torch_dtype=torch.float32).eval())
        controlnet_files = export_controlnet_pair(cn, pipe.unet, out, timestep_kind, latent_hw=64)
        del cn
    tok = _from_hub(p["repo"], lambda: CLIPTokenizer.from_pretrained(p["repo"], subfolder="tokenizer"))
    save_tokenizer(tok, os.path.join(out, "tokenizer.json"))
    if vae_choice == "taesd":
        vae = _from_hub("madebyollin/taesd",
                        lambda: AutoencoderTiny.from_pretrained("madebyollin/taesd", torch_dtype=torch.float32))
        export_vae(vae, out, zero_to_one=True, image_hw=512)
        scale, image_range = 1.0, "zero-to-one"
    else:
        export_vae(pipe.vae, out, zero_to_one=False, image_hw=512)
        scale, image_range = float(pipe.vae.config.scaling_factor), "minus-one-to-one"
    sched = pipe.scheduler.config
    scheduler = {"prediction-type": sched.get("prediction_type", "epsilon")}
    write_manifest(out, name=os.path.basename(os.path.abspath(out)),
                   description=f"{p['repo']}" + (f" + {p['lora']} (fused)" if p["lora"] else "") +
                   (" with madebyollin/taesd" if vae_choice == "taesd" else "") +
                   (f" + ControlNet {CONTROLNETS[controlnet]['repo']}" if controlnet else "") +
                   (" (9-channel inpainting UNet: sample = latents 4 + mask 1 + masked-image latents 4)"
                    if p.get("inpaint") else ""),
                   # the VAE's latent channels (the UNet's output): an inpainting UNet takes 2C + 1 channels in
                   latent_channels=pipe.unet.config.out_channels, latent_scale=scale, image_range=image_range,
                   files={"unet": "unet.onnx", "vae-encoder": "vae_encoder.onnx", "vae-decoder": "vae_decoder.onnx",
                          "text-encoder": "text_encoder.onnx", "tokenizer": "tokenizer.json", **controlnet_files},
                   pad_token=p["pad"], defaults=p["defaults"], scheduler=scheduler,
                   size_multiple=8 * 2 ** (len(pipe.unet.config.block_out_channels) - 1),
                   native_size=8 * pipe.unet.config.sample_size, unet=pipe.unet.config)
    if fp16:
        del pipe
        convert_folder_fp16(out, fp16_folder_for(out), fuse="cuda")


# ----------------------------------------------------------------------------------------------------------------
# Random SD1.5-shaped models (speed checks): upstream configs as dicts, random weights, no download.

# stable-diffusion-v1-5/stable-diffusion-v1-5 unet/config.json (860M parameters)
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
                 flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, center_input_sample=False)
# the same repo's vae/config.json (83M)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=512, scaling_factor=0.18215)
# madebyollin/taesd config.json (AutoencoderTiny defaults, 2.4M)
TAESD = dict(in_channels=3, out_channels=3, encoder_block_out_channels=(64, 64, 64, 64),
             decoder_block_out_channels=(64, 64, 64, 64), act_fn="relu", latent_channels=4, upsampling_scaling_factor=2,
             num_encoder_blocks=(1, 3, 3, 3), num_decoder_blocks=(3, 3, 3, 1), latent_magnitude=3, latent_shift=0.5,
             scaling_factor=1.0)
# openai/clip-vit-large-patch14 text config (SD1.5's text encoder, 123M)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
              pad_token_id=49407)
# --tiny: the same graph structure, shrunk, for smoke tests on a CPU
SD15_TINY = dict(unet=dict(block_out_channels=(32, 64, 64, 64), norm_num_groups=16, cross_attention_dim=64,
                           attention_head_dim=4, sample_size=32),
                 vae=dict(block_out_channels=(16, 16, 32, 32), norm_num_groups=8),
                 taesd=dict(encoder_block_out_channels=(16, 16, 16, 16), decoder_block_out_channels=(16, 16, 16, 16)),
                 clip=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4))


def random_sd15_modules(vae="taesd", tiny=False, seed=0):
    """(unet, vae, text_encoder) with random weights, built on the CPU in a fixed order from `seed`: anyone who calls
    this with the same arguments (scripts/gpu_bench.py's torch baseline) gets the same weights as the ONNX export."""
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    def cfg(base, key):
        return {**base, **(SD15_TINY[key] if tiny else {})}

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg(SD15_UNET, "unet")).eval()
    ae = (AutoencoderTiny(**cfg(TAESD, "taesd")) if vae == "taesd" else AutoencoderKL(**cfg(SD15_VAE, "vae"))).eval()
    clip_cfg = cfg(CLIP_L, "clip")
    if tiny:
        clip_cfg["hidden_size"] = SD15_TINY["unet"]["cross_attention_dim"]
    text = CLIPTextModel(CLIPTextConfig(**clip_cfg)).eval()
    return unet, ae, text


def build_random_sd15(out, vae="taesd", tiny=False, fp16=False, timestep_kind="float32-batch", image_hw=512):
    t = time.time()
    unet, ae, text = random_sd15_modules(vae, tiny)
    n = sum(p.numel() for p in unet.parameters()) / 1e6
    print(f"random SD1.5-shaped modules built in {time.time() - t:.1f}s (UNet {n:.1f}M parameters)", flush=True)
    os.makedirs(out, exist_ok=True)
    export_text_encoder(text, os.path.join(out, "text_encoder.onnx"))
    export_unet(unet, os.path.join(out, "unet.onnx"), timestep_kind, latent_hw=image_hw // 8)
    zero_to_one = vae == "taesd"
    export_vae(ae, out, zero_to_one=zero_to_one, image_hw=image_hw)
    shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "tiny-clip", "tokenizer.json"),
                os.path.join(out, "tokenizer.json"))
    what = "TAESD" if zero_to_one else "SD VAE"
    write_manifest(out, name=os.path.basename(os.path.abspath(out)),
                   description=f"RANDOM weights with SD1.5 UNet / {what} / CLIP-L shapes{' (TINY)' if tiny else ''}: "
                   "speed checks only, the output is noise",
                   latent_channels=4, latent_scale=1.0 if zero_to_one else 0.18215,
                   image_range="zero-to-one" if zero_to_one else "minus-one-to-one",
                   files={"unet": "unet.onnx", "vae-encoder": "vae_encoder.onnx", "vae-decoder": "vae_decoder.onnx",
                          "text-encoder": "text_encoder.onnx", "tokenizer": "tokenizer.json"},
                   pad_token="<|endoftext|>", defaults=dict(steps=1, strength=0.5, guidance=1.0),
                   size_multiple=8 * 2 ** (len(unet.config.block_out_channels) - 1),
                   native_size=512, unet=unet.config, scheduler={"prediction-type": "epsilon"})
    if fp16:
        del unet, ae, text
        convert_folder_fp16(out, fp16_folder_for(out), fuse="cuda")


# ----------------------------------------------------------------------------------------------------------------
# Tiny random models (configs only): the real architectures, shrunk; the I/O contract is unchanged.

TINY_TEXT_HIDDEN = 8


def tiny_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=TINY_TEXT_HIDDEN, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return CLIPTextModel(cfg).eval()


def tiny_unet(latent_channels, time_cond_proj_dim=None, linear_projection=False, in_channels=None):
    """in_channels: the UNet's input channels when not latent_channels (an inpainting UNet: 2 * latent_channels + 1)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=in_channels or latent_channels, out_channels=latent_channels, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TINY_TEXT_HIDDEN,
        attention_head_dim=4, norm_num_groups=4, time_cond_proj_dim=time_cond_proj_dim,
        use_linear_projection=linear_projection,
    ).eval()


def tiny_sd_vae():
    from diffusers import AutoencoderKL

    # Four blocks keep the real 8x spatial factor.
    return AutoencoderKL(block_out_channels=(4, 4, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4,
                         layers_per_block=1, scaling_factor=0.18215).eval()


def tiny_taesd():
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4).eval()


def tiny_controlnet(unet):
    """A ControlNet shaped like `unet`'s encoder (ControlNetModel.from_unet: same blocks, channels, cross-attention
    width), with random weights of its own and a small conditioning embedding (3 -> 8, 8, 16, 16 channels, /8).
    diffusers zero-initialises the "zero convolutions" (every residual's 1x1 conv and the conditioning embedding's
    output conv: a fresh ControlNet is a no-op); here they are random too, or every residual would be zero and the
    tests would check nothing.

    The conditioning embedding's eight convolutions (conv_in, six blocks, conv_out; SiLU between them) get their
    weights (not biases) multiplied by CONTROLNET_EMBED_GAIN = 2 * sqrt(3): PyTorch's default kaiming_uniform(a=sqrt(5))
    init has std 1 / sqrt(3 * fan_in), and SiLU's slope near 0 is 1/2, so with the default weights each layer shrinks
    the image's signal about 3.5x and the per-layer biases drown it (a moved limb changed the hint by ~1e-4, the 8-bit
    output by 0-4 of 12288 bytes by 1 level). Scaled, each layer keeps the signal's scale: on 64x64 txt2img with 2
    steps at conditioning scale 1, moving a 12-px bar from x=16 to x=48 changes ~45% of the output bytes by >= 2
    levels, pose vs black ~69%. Same random draws as before: only the multiplication is new."""
    import torch
    from diffusers import ControlNetModel

    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16),
                                   load_weights_from_unet=False)
    for conv in [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]:
        conv.reset_parameters()
    with torch.no_grad():
        for conv in cn.controlnet_cond_embedding.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.mul_(CONTROLNET_EMBED_GAIN)
    return cn.eval()


# tiny_controlnet: the weight gain of the conditioning embedding's convolutions (see there).
CONTROLNET_EMBED_GAIN = 2.0 * math.sqrt(3.0)


TINY_FILES_SHARED = {"text-encoder": "../tiny-clip/text_encoder.onnx", "tokenizer": "../tiny-clip/tokenizer.json"}

# name -> (what it mimics, VAE kind, timestep kind, time_cond_proj_dim, pad token, linear projection)
TINY_MODELS = {
    "tiny-sd15-lcm-lora": ("SD1.5 + LCM-LoRA (SD VAE, no timestep_cond, int64 timestep like optimum)",
                           "sd", "int64-batch", None, "<|endoftext|>", False),
    "tiny-lcm-dreamshaper": ("LCM-Dreamshaper-v7 (full LCM: timestep_cond [B,256], float32 [B] timestep)",
                             "sd", "float32-batch", 256, "<|endoftext|>", False),
    "tiny-sd-turbo": ("SD-Turbo with TAESD (pad token '!', float32 scalar timestep, linear attention projections)",
                      "taesd", "float32-scalar", None, "!", True),
}
# ControlNet folders: name -> the tiny model whose UNet, VAE, text encoder and tokenizer it references (its own files:
# controlnet.onnx and unet_controlnet.onnx, the referenced UNet's weights with residual inputs).
TINY_CONTROLNETS = {"tiny-sd15-lcm-lora-controlnet": "tiny-sd15-lcm-lora"}
# fp16 twins made by `fp16` (plain conversion, runs on the CPU EP): name -> source folder
TINY_FP16_TWINS = {"tiny-sd15-lcm-lora-fp16": "tiny-sd15-lcm-lora"}
# 9-channel inpainting twins (DESIGN §8): name -> what it mimics, the tiny model whose VAE, text encoder, tokenizer
# and timestep form it takes, its UNet's own seed (nothing tiny_modules() builds moves), defaults (the real preset's).
TINY_INPAINT = {
    "tiny-sd15-inpainting-lcm-lora": dict(
        what="runwayml/stable-diffusion-inpainting + LCM-LoRA (9-channel UNet: sample = latents 4 + mask 1 + "
             "masked-image latents 4, out_sample 4; SD VAE, no timestep_cond, int64 timestep like optimum)",
        base="tiny-sd15-lcm-lora", seed=301, defaults=PRESETS["sd15-inpainting-lcm-lora"]["defaults"]),
}


def tiny_modules():
    """Every tiny torch module, built in a fixed order from one seed: the exported ONNX files and the golden
    scripts (scripts/golden/img2img.py) get the same weights."""
    import torch

    torch.manual_seed(0)
    mods = {"text_encoder": tiny_text_encoder()}
    for name, (_, vae_kind, _, cond_dim, _, linear) in TINY_MODELS.items():
        mods[name] = {"unet": tiny_unet(4, cond_dim, linear), "vae": tiny_sd_vae() if vae_kind == "sd" else tiny_taesd()}
    mods["taef2-tiny"] = {"unet": tiny_unet(32)}
    # Each ControlNet from a seed of its own, after everything above: adding one moves no earlier weights.
    for i, (name, base) in enumerate(TINY_CONTROLNETS.items()):
        torch.manual_seed(1 + i)
        mods[name] = {"controlnet": tiny_controlnet(mods[base]["unet"]), "unet": mods[base]["unet"]}
    return mods


def tiny_inpaint_modules():
    """{name: {"unet": the tiny UNet with 2 * 4 + 1 input channels}} for TINY_INPAINT, each from its own seed (the
    VAE and text encoder are the base's: tiny_modules()). scripts/golden/inpaint9.py gets the exported weights."""
    import torch

    mods = {}
    for name, spec in TINY_INPAINT.items():
        torch.manual_seed(spec["seed"])
        mods[name] = {"unet": tiny_unet(4, in_channels=9)}
    return mods


def build_tiny_inpaint(models_dir):
    """The inpainting twins: own unet.onnx (the base's timestep form) + model.toml; VAE, text encoder and tokenizer
    referenced from the base's folder and ../tiny-clip. Writes nothing else."""
    mods = tiny_inpaint_modules()
    for name, spec in TINY_INPAINT.items():
        print(name, flush=True)
        base = spec["base"]
        _, vae_kind, ts_kind, cond_dim, pad, _ = TINY_MODELS[base]
        assert vae_kind == "sd" and cond_dim is None, "the manifest below assumes the SD VAE, no timestep_cond"
        folder = os.path.join(models_dir, name)
        os.makedirs(folder, exist_ok=True)
        unet = mods[name]["unet"]
        export_unet(unet, os.path.join(folder, "unet.onnx"), ts_kind)
        files = {"unet": "unet.onnx", "vae-encoder": f"../{base}/vae_encoder.onnx",
                 "vae-decoder": f"../{base}/vae_decoder.onnx"}
        files.update(TINY_FILES_SHARED)
        write_manifest(folder, name=name, description=f"TINY RANDOM weights for tests; mimics {spec['what']}; "
                       f"VAE referenced from {base}",
                       latent_channels=unet.config.out_channels, latent_scale=0.18215, image_range="minus-one-to-one",
                       files=files, pad_token=pad, defaults=spec["defaults"], size_multiple=16, native_size=512,
                       unet=unet.config)


def build_tiny(models_dir):
    mods = tiny_modules()
    clip_dir = os.path.join(models_dir, "tiny-clip")
    os.makedirs(clip_dir, exist_ok=True)
    print("tiny-clip (shared tokenizer + tiny text encoder)", flush=True)
    save_tokenizer(clip_vocab.sd1_tokenizer(), os.path.join(clip_dir, "tokenizer.json"))
    export_text_encoder(mods["text_encoder"], os.path.join(clip_dir, "text_encoder.onnx"))

    for name, (what, vae_kind, ts_kind, _, pad, _) in TINY_MODELS.items():
        print(name, flush=True)
        folder = os.path.join(models_dir, name)
        os.makedirs(folder, exist_ok=True)
        export_unet(mods[name]["unet"], os.path.join(folder, "unet.onnx"), ts_kind)
        if vae_kind == "sd":
            export_vae(mods[name]["vae"], folder, zero_to_one=False)
            scale, image_range = 0.18215, "minus-one-to-one"
        else:
            export_vae(mods[name]["vae"], folder, zero_to_one=True)
            scale, image_range = 1.0, "zero-to-one"
        files = {"unet": "unet.onnx", "vae-encoder": "vae_encoder.onnx", "vae-decoder": "vae_decoder.onnx"}
        files.update(TINY_FILES_SHARED)
        write_manifest(folder, name=name, description=f"TINY RANDOM weights for tests; mimics {what}",
                       latent_channels=4, latent_scale=scale, image_range=image_range, files=files, pad_token=pad,
                       defaults=dict(steps=2, strength=0.5, guidance=1.0), size_multiple=16,
                       native_size=512, unet=mods[name]["unet"].config)

    # The real TAEF2 (32 latent channels) from ../shared, referenced, not copied, with a tiny 32-channel UNet.
    print("taef2-tiny", flush=True)
    folder = os.path.join(models_dir, "taef2-tiny")
    os.makedirs(folder, exist_ok=True)
    export_unet(mods["taef2-tiny"]["unet"], os.path.join(folder, "unet.onnx"), "float32-batch")
    files = {"unet": "unet.onnx", "vae-encoder": "../../../shared/models/taef2/taef2_encoder.onnx",
             "vae-decoder": "../../../shared/models/taef2/taef2_decoder.onnx"}
    files.update(TINY_FILES_SHARED)
    write_manifest(folder, name="taef2-tiny",
                   description="REAL TAEF2 autoencoder (../shared/models/taef2, 32 latent channels) with a TINY RANDOM "
                   "UNet and text encoder: a real VAE round trip (--strength 0) and a 32-channel diffusion path",
                   latent_channels=32, latent_scale=1.0, image_range="zero-to-one", files=files,
                   pad_token="<|endoftext|>", defaults=dict(steps=2, strength=0.5, guidance=1.0), size_multiple=16,
                   native_size=512, unet=mods["taef2-tiny"]["unet"].config)

    for name, base in TINY_CONTROLNETS.items():
        print(name, flush=True)
        folder = os.path.join(models_dir, name)
        os.makedirs(folder, exist_ok=True)
        what, vae_kind, ts_kind, _, pad, _ = TINY_MODELS[base]
        assert vae_kind == "sd", "the manifest below assumes the SD VAE"
        files = {"unet": f"../{base}/unet.onnx", "vae-encoder": f"../{base}/vae_encoder.onnx",
                 "vae-decoder": f"../{base}/vae_decoder.onnx"}
        files.update(TINY_FILES_SHARED)
        files.update(export_controlnet_pair(mods[name]["controlnet"], mods[name]["unet"], folder, ts_kind))
        write_manifest(folder, name=name,
                       description=f"TINY RANDOM weights for tests: {base} (UNet, VAE, text encoder referenced) with "
                       "a tiny random ControlNet (zero convolutions randomised) and the same UNet taking its residuals",
                       latent_channels=4, latent_scale=0.18215, image_range="minus-one-to-one", files=files,
                       pad_token=pad, defaults=dict(steps=2, strength=0.5, guidance=1.0), size_multiple=16,
                       native_size=512, unet=mods[name]["unet"].config)

    for twin, source in TINY_FP16_TWINS.items():
        print(twin, flush=True)
        convert_folder_fp16(os.path.join(models_dir, source), os.path.join(models_dir, twin))

    build_tiny_inpaint(models_dir)


# ----------------------------------------------------------------------------------------------------------------
# SDXL (DESIGN §7): two text encoders, a UNet with `text_embeds` and `time_ids`, the SDXL VAE (scale 0.13025) or
# TAESDXL. The same export functions write the real models (`real sdxl-*`) and the tiny twins (`tiny-sdxl`).
#
#   text_encoder.onnx    input_ids int64 [B,77] -> last_hidden_state f32 [B,77,768], pooler_output f32 [B,768],
#                        hidden_states.0..12 f32 [B,77,768]               (CLIP-L: CLIPTextModel)
#   text_encoder_2.onnx  input_ids int64 [B,77] -> last_hidden_state f32 [B,77,1280], text_embeds f32 [B,1280],
#                        hidden_states.0..32 f32 [B,77,1280]              (OpenCLIP bigG: CLIPTextModelWithProjection)
#   unet.onnx            sample f32 [B,4,h,w], timestep f32 [B], encoder_hidden_states f32 [B,77,2048],
#                        (timestep_cond f32 [B,256]: full LCM-SDXL only), text_embeds f32 [B,1280], time_ids f32 [B,6]
#                        -> out_sample f32 [B,4,h,w]
#   vae_encoder.onnx / vae_decoder.onnx   as the SD ones (mean latents, unscaled; scale 0.13025 or TAESDXL's 1.0)
# Context = concat(hidden_states.{L1-1} of encoder 1, hidden_states.{L2-1} of encoder 2) (penultimate layers);
# pooled = encoder 2's text_embeds; time_ids = [H, W, 0, 0, H, W].

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"


def euler_scheduler(kind, prediction="epsilon", steps_offset=1):
    """model.toml's [scheduler] for the Euler kinds ("euler", "euler-ancestral"): trailing spacing, the prediction type,
    and steps-offset as the hub's scheduler_config.json has it (1 for SDXL base, Turbo and Lightning; diffusers applies
    steps_offset to "leading" spacing only: under "trailing" it changes nothing)."""
    return {"kind": kind, "timestep-spacing": "trailing", "prediction-type": prediction, "steps-offset": steps_offset}


# SDXL-Turbo's scheduler_config.json: EulerAncestralDiscreteScheduler, trailing, epsilon, steps_offset 1.
TURBO_SCHEDULER = euler_scheduler("euler-ancestral")
# ByteDance/SDXL-Lightning: one distilled UNet per step count (safetensors of SDXL base's UNet), run with SDXL base's
# EulerDiscreteScheduler config switched to trailing spacing; the 1-step UNet predicts the sample (x0), not the noise.
LIGHTNING_REPO = "ByteDance/SDXL-Lightning"
LIGHTNING_UNETS = {1: "sdxl_lightning_1step_unet_x0.safetensors", 2: "sdxl_lightning_2step_unet.safetensors",
                   4: "sdxl_lightning_4step_unet.safetensors", 8: "sdxl_lightning_8step_unet.safetensors"}


def lightning_scheduler(steps):
    return euler_scheduler("euler", "sample" if steps == 1 else "epsilon")


# scheduler: model.toml's [scheduler] (None: LCM, prediction type from the pipeline's config); unet_file: (hub repo,
# file) of a UNet state dict loaded into the base's UNet config (SDXL-Lightning).
SDXL_PRESETS = {
    "sdxl-lcm-lora": dict(repo=SDXL_BASE, lora="latent-consistency/lcm-lora-sdxl", unet=None, native=1024,
                          defaults=dict(steps=2, strength=0.5, guidance=1.0)),
    "sdxl-turbo": dict(repo="stabilityai/sdxl-turbo", lora=None, unet=None, native=512,
                       defaults=dict(steps=1, strength=0.5, guidance=1.0), scheduler=TURBO_SCHEDULER),
    # Full LCM: the distilled UNet (takes `timestep_cond`, the guidance embedding) with SDXL base's other parts.
    "lcm-sdxl": dict(repo=SDXL_BASE, lora=None, unet="latent-consistency/lcm-sdxl", native=1024,
                     defaults=dict(steps=4, strength=0.5, guidance=8.0)),
    # SDXL-Lightning: the UNet distilled for N steps (the LoRAs are for other bases; the full UNets are better).
    # Guidance 1.0 = no classifier-free guidance (Lightning was distilled for guidance 0).
    **{f"sdxl-lightning-{n}step": dict(repo=SDXL_BASE, lora=None, unet=None, unet_file=(LIGHTNING_REPO, f), native=1024,
                                       defaults=dict(steps=n, strength=0.5, guidance=1.0),
                                       scheduler=lightning_scheduler(n))
       for n, f in LIGHTNING_UNETS.items()},
}
# `real SDXL-PRESET ... --controlnet NAME`: SDXL ControlNets (ControlNetModel with addition_embed_type "text_time": they
# take `text_embeds` and `time_ids` as the UNet does). Any SDXL preset: all share SDXL base's UNet architecture.
SDXL_CONTROLNETS = {
    "openpose": dict(repo="thibaud/controlnet-openpose-sdxl-1.0"),
    "openpose-xinsir": dict(repo="xinsir/controlnet-openpose-sdxl-1.0"),
}
SDXL_VAE_FP16_FIX = "madebyollin/sdxl-vae-fp16-fix"  # MIT; the SDXL VAE's latents, no fp16 overflow
TAESDXL = "madebyollin/taesdxl"
# model.toml's [sdxl]: penultimate hidden states of each encoder, encoder 2's pooled projection.
SDXL_TABLE = {"hidden-layer": -2, "pooled-output": "text_embeds"}


def export_text_encoder_xl(text_encoder, path, optimum=False, opset=OPSET):
    """An SDXL text encoder (CLIPTextModel or CLIPTextModelWithProjection) with all its hidden states.
    latentcam's layout: input_ids int64 [batch, 77]; outputs last_hidden_state, the pooled output, hidden_states.0..L.
    optimum's (`optimum=True`): as `optimum-cli export onnx` writes it (batch_size and sequence_length axes,
    text_embeds first for CLIPTextModelWithProjection, text_embeds' width labelled sequence_length)."""
    import torch

    wrap = _wrappers()["TextEncoderXLWrap"](text_encoder, optimum=optimum)
    layers = text_encoder.config.num_hidden_layers
    hidden = [f"hidden_states.{i}" for i in range(layers + 1)]
    pooled = wrap.pooled
    outputs = ([pooled, "last_hidden_state"] if wrap.pooled_first else ["last_hidden_state", pooled]) + hidden
    ids = torch.full((2, 77), 0 if pooled == "text_embeds" else 49407, dtype=torch.int64)
    ids[:, 0], ids[:, 1], ids[:, 2], ids[:, 3] = 49406, 320, 1125, 49407  # "<start> a photo <end>" + padding
    if optimum:
        seq = {0: "batch_size", 1: "sequence_length"}
        axes = {"input_ids": seq, "last_hidden_state": seq, **{h: seq for h in hidden}}
        axes[pooled] = seq if pooled == "text_embeds" else {0: "batch_size"}
    else:
        axes = {name: {0: "batch"} for name in ["input_ids"] + outputs}
    _export(wrap, (ids,), path, ["input_ids"], outputs, axes, opset=opset)


def export_text_encoder_optimum_sd(text_encoder, path, opset=18):
    """SD1.x/2.x text encoder in optimum's layout: input_ids int64 [batch_size, sequence_length] ->
    last_hidden_state, pooler_output (optimum adds hidden states only for SDXL and SD3)."""
    import torch

    ids = torch.full((2, 77), 49407, dtype=torch.int64)
    ids[:, 0], ids[:, 1], ids[:, 2] = 49406, 320, 49407
    seq = {0: "batch_size", 1: "sequence_length"}

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            out = self.m(input_ids=input_ids, return_dict=True)
            return out.last_hidden_state, out.pooler_output

    _export(Wrap(text_encoder), (ids,), path, ["input_ids"], ["last_hidden_state", "pooler_output"],
            {"input_ids": seq, "last_hidden_state": seq, "pooler_output": {0: "batch_size"}}, opset=opset)


def export_unet_xl(unet, path, timestep_kind="float32-batch", latent_hw=8, optimum=False, opset=OPSET):
    """A UNet with optimum's port names and order (SDXL's `text_embeds`, `time_ids` when the config has
    addition_embed_type "text_time"; `timestep_cond` for full LCM). latentcam's layout: `timestep` float32 [batch]
    (the denoising batch runs different timesteps in one call) and axes batch/height/width. optimum's: `timestep` a
    float32 scalar and optimum's axis names."""
    import torch

    cfg = unet.config
    text_time = cfg.addition_embed_type == "text_time"
    if optimum:
        timestep_kind = "float32-scalar"
    if timestep_kind != "float32-scalar" and timestep_kind != "float32-batch":
        raise SystemExit(f"SDXL exports take a float32 timestep ([B] or scalar), not {timestep_kind}")
    gen = torch.Generator().manual_seed(0)  # example inputs only
    batch = 2
    names = ["sample", "timestep", "encoder_hidden_states"]
    args = [torch.randn(batch, cfg.in_channels, latent_hw, latent_hw, generator=gen),
            _timestep_example(timestep_kind, batch),
            torch.randn(batch, 77, cfg.cross_attention_dim, generator=gen)]
    b = "batch_size" if optimum else "batch"
    axes = {"sample": {0: b, 2: "height", 3: "width"},
            "encoder_hidden_states": {0: b, 1: "sequence_length"} if optimum else {0: b},
            "out_sample": {0: b, 2: "height", 3: "width"}}
    axes["timestep"] = {} if timestep_kind == "float32-scalar" else {0: b}
    if cfg.time_cond_proj_dim is not None:
        names.append("timestep_cond")
        args.append(torch.randn(batch, cfg.time_cond_proj_dim, generator=gen))
        axes["timestep_cond"] = {0: b}
    if text_time:
        pooled_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        names += ["text_embeds", "time_ids"]
        side = float(8 * latent_hw)
        args += [torch.randn(batch, pooled_dim, generator=gen),
                 torch.tensor([[side, side, 0.0, 0.0, side, side]] * batch)]
        axes["text_embeds"] = {0: b}
        axes["time_ids"] = {0: b}
    if timestep_kind == "float32-scalar":
        del axes["timestep"]
    _export(_wrappers()["UNetXLWrap"](unet), tuple(args), path, names, ["out_sample"], axes, opset=opset)


def export_vae_optimum(vae, folder, image_hw=64, opset=18):
    """AutoencoderKL in optimum's layout: vae_encoder/model.onnx (sample -> latent_parameters [B,2C,h,w]: mean then
    log-variance) and vae_decoder/model.onnx (latent_sample -> sample), optimum's axis names."""
    import torch

    gen = torch.Generator().manual_seed(0)
    f = 2 ** (len(vae.config.down_block_types) - 1)
    image = torch.rand(2, 3, image_hw, image_hw, generator=gen) * 2 - 1
    enc = _wrappers()["VaeEncoderParamsWrap"](vae)
    _export(enc, (image,), os.path.join(folder, "vae_encoder", "model.onnx"), ["sample"], ["latent_parameters"],
            {"sample": {0: "batch_size", 2: "sample_height", 3: "sample_width"},
             "latent_parameters": {0: "batch_size", 2: f"sample_height / {f}", 3: f"sample_width / {f}"}},
            opset=opset)
    latent = torch.randn(2, vae.config.latent_channels, image_hw // f, image_hw // f, generator=gen)
    _export(_wrappers()["VaeDecoderWrap"](vae, False), (latent,), os.path.join(folder, "vae_decoder", "model.onnx"),
            ["latent_sample"], ["sample"],
            {"latent_sample": {0: "batch_size", 2: "latent_height", 3: "latent_width"},
             "sample": {0: "batch_size", 2: f"latent_height * {f}", 3: f"latent_width * {f}"}}, opset=opset)


def write_sdxl_manifest(folder, *, name, description, files, unet, vae_kind, latent_scale, defaults, native_size,
                        force_zeros, pad_token="<|endoftext|>", pad_token_2="!", scheduler=None):
    """model.toml of an SDXL folder. vae_kind "sd": the SDXL VAE (-1..1, vae-fp32-only: it overflows in fp16);
    "taesd": TAESDXL-style (0..1, fp16-safe)."""
    taesd = vae_kind == "taesd"
    write_manifest(folder, name=name, description=description, family="sdxl",
                   latent_channels=unet.config.in_channels, latent_scale=latent_scale,
                   image_range="zero-to-one" if taesd else "minus-one-to-one", vae_fp32_only=not taesd,
                   files=files, pad_token=pad_token, pad_token_2=pad_token_2,
                   sdxl={**SDXL_TABLE, "force-zeros-for-empty-prompt": bool(force_zeros)},
                   defaults=defaults, scheduler=scheduler,
                   size_multiple=8 * 2 ** (len(unet.config.block_out_channels) - 1),
                   native_size=native_size, unet=unet.config)


def export_sdxl_folder(folder, *, unet, vae, vae_kind, timestep_kind, latent_hw, image_hw):
    """unet.onnx + vae_encoder.onnx + vae_decoder.onnx of an SDXL folder (text encoders: export_text_encoder_xl)."""
    os.makedirs(folder, exist_ok=True)
    export_unet_xl(unet, os.path.join(folder, "unet.onnx"), timestep_kind, latent_hw=latent_hw)
    export_vae(vae, folder, zero_to_one=vae_kind == "taesd", image_hw=image_hw)


def export_real_sdxl(preset, out, vae_choice, timestep_kind, fp16=False, controlnet=None):
    """Cannot run on a machine without the Hugging Face hub; fusing a real SDXL UNet (2.6 B parameters) for --fp16
    needs about 60 GB of memory. controlnet: a SDXL_CONTROLNETS name (controlnet.onnx + unet_controlnet.onnx, both
    with `text_embeds` and `time_ids`: export_controlnet_pair_xl)."""
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, StableDiffusionXLPipeline, UNet2DConditionModel

    p = SDXL_PRESETS[preset]
    extra = {}
    if p["unet"]:
        extra["unet"] = UNet2DConditionModel.from_pretrained(p["unet"], torch_dtype=torch.float32)
    elif p.get("unet_file"):  # SDXL-Lightning: a state dict for SDXL base's UNet config (ByteDance's recipe)
        from huggingface_hub import hf_hub_download
        from safetensors.torch import load_file

        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(p["repo"], subfolder="unet"))
        unet.load_state_dict(load_file(hf_hub_download(*p["unet_file"])))
        extra["unet"] = unet.eval()
    pipe = StableDiffusionXLPipeline.from_pretrained(p["repo"], torch_dtype=torch.float32, add_watermarker=False,
                                                     **extra)
    if p["lora"]:
        pipe.load_lora_weights(p["lora"])
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    os.makedirs(out, exist_ok=True)
    export_text_encoder_xl(pipe.text_encoder, os.path.join(out, "text_encoder.onnx"))
    export_text_encoder_xl(pipe.text_encoder_2, os.path.join(out, "text_encoder_2.onnx"))
    save_tokenizer(pipe.tokenizer, os.path.join(out, "tokenizer.json"))
    save_tokenizer(pipe.tokenizer_2, os.path.join(out, "tokenizer_2.json"))
    if vae_choice == "taesdxl":
        vae, vae_kind = AutoencoderTiny.from_pretrained(TAESDXL, torch_dtype=torch.float32), "taesd"
        scale = 1.0
    else:
        vae, vae_kind = pipe.vae, "sd"
        scale = float(pipe.vae.config.scaling_factor)
    export_sdxl_folder(out, unet=pipe.unet, vae=vae, vae_kind=vae_kind, timestep_kind=timestep_kind, latent_hw=64,
                       image_hw=512)
    files = {"unet": "unet.onnx", "vae-encoder": "vae_encoder.onnx", "vae-decoder": "vae_decoder.onnx",
             "text-encoder": "text_encoder.onnx", "tokenizer": "tokenizer.json",
             "text-encoder-2": "text_encoder_2.onnx", "tokenizer-2": "tokenizer_2.json"}
    if controlnet is not None:
        from diffusers import ControlNetModel

        cn = ControlNetModel.from_pretrained(SDXL_CONTROLNETS[controlnet]["repo"], torch_dtype=torch.float32).eval()
        files.update(export_controlnet_pair_xl(cn, pipe.unet, out, timestep_kind, latent_hw=64))
        del cn
    what = (f"{p['repo']}" + (f" + {p['lora']} (fused)" if p["lora"] else "") +
            (f" with the UNet of {p['unet']}" if p["unet"] else "") +
            (f" with the UNet {p['unet_file'][0]}/{p['unet_file'][1]}" if p.get("unet_file") else "") +
            (f" with {TAESDXL}" if vae_choice == "taesdxl" else "") +
            (f" + ControlNet {SDXL_CONTROLNETS[controlnet]['repo']}" if controlnet else ""))
    scheduler = p.get("scheduler") or {"prediction-type": pipe.scheduler.config.get("prediction_type", "epsilon")}
    write_sdxl_manifest(out, name=os.path.basename(os.path.abspath(out)), description=what, files=files,
                        unet=pipe.unet, vae_kind=vae_kind, latent_scale=scale, defaults=p["defaults"],
                        native_size=p["native"],
                        force_zeros=pipe.config.get("force_zeros_for_empty_prompt", True),
                        pad_token=pipe.tokenizer.pad_token, pad_token_2=pipe.tokenizer_2.pad_token,
                        scheduler=scheduler)
    if fp16:
        del pipe, vae, extra
        dst = fp16_folder_for(out)
        os.makedirs(dst, exist_ok=True)
        scratch = None
        if vae_choice != "taesdxl":  # the original SDXL VAE overflows in fp16: the fp16-fix VAE, same latents
            scratch = tempfile.mkdtemp(prefix=".vae-fp16-fix-", dir=dst)
            fix = AutoencoderKL.from_pretrained(SDXL_VAE_FP16_FIX, torch_dtype=torch.float32)
            export_vae(fix, scratch, zero_to_one=False, image_hw=512)
            del fix
        try:
            convert_folder_fp16(out, dst, fuse="cuda", vae_src=scratch)
        finally:
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)


# Tiny SDXL twins (DESIGN §7's configuration, which diffusers and optimum accept; the two encoders' different
# depths catch an off-by-one in the hidden layer).
SDXL_TINY_SEED = 0
SDXL_TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                      transformer_layers_per_block=(1, 2), use_linear_projection=True, norm_num_groups=4,
                      cross_attention_dim=24, addition_embed_type="text_time", addition_time_embed_dim=8,
                      projection_class_embeddings_input_dim=64)  # 6 x 8 + text encoder 2's projection 16
SDXL_TINY_TEXT = dict(vocab_size=49408, intermediate_size=32, num_attention_heads=2, max_position_embeddings=77,
                      bos_token_id=49406, eos_token_id=49407)
SDXL_TINY_TEXT_1 = dict(SDXL_TINY_TEXT, hidden_size=8, num_hidden_layers=2, hidden_act="quick_gelu",
                        pad_token_id=49407)
SDXL_TINY_TEXT_2 = dict(SDXL_TINY_TEXT, hidden_size=16, num_hidden_layers=3, hidden_act="gelu", projection_dim=16,
                        pad_token_id=0)
SDXL_TINY_CLIP = "tiny-clip-sdxl"
SDXL_TINY_FILES_SHARED = {"text-encoder": f"../{SDXL_TINY_CLIP}/text_encoder.onnx",
                          "tokenizer": "../tiny-clip/tokenizer.json",
                          "text-encoder-2": f"../{SDXL_TINY_CLIP}/text_encoder_2.onnx",
                          "tokenizer-2": "../tiny-clip/tokenizer.json"}
# name -> what it mimics, VAE kind, time_cond_proj_dim, defaults (the real preset's), native size
SDXL_TINY_MODELS = {
    "tiny-sdxl-lcm-lora": dict(what="SDXL base + LCM-LoRA-SDXL fused (SDXL VAE, scale 0.13025)", vae="sd", cond=None,
                               defaults=SDXL_PRESETS["sdxl-lcm-lora"]["defaults"], native=1024),
    "tiny-sdxl-turbo": dict(what="SDXL-Turbo with a TAESDXL-style VAE (0..1, scale 1)", vae="taesd", cond=None,
                            defaults=SDXL_PRESETS["sdxl-turbo"]["defaults"], native=512,
                            scheduler=SDXL_PRESETS["sdxl-turbo"]["scheduler"]),
    "tiny-lcm-sdxl": dict(what="LCM-SDXL (full LCM: timestep_cond [B,256], the guidance embedding; SDXL VAE)",
                          vae="sd", cond=256, defaults=SDXL_PRESETS["lcm-sdxl"]["defaults"], native=1024),
}
SDXL_TINY_FP16_TWINS = {"tiny-sdxl-lcm-lora-fp16": "tiny-sdxl-lcm-lora"}
# optimum-layout folders: name -> the tiny model whose weights they hold
OPTIMUM_TINY = {"tiny-sdxl-optimum": "tiny-sdxl-lcm-lora", "tiny-sd15-optimum": "tiny-sd15-lcm-lora"}


def tiny_sdxl_text_encoders():
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    return (CLIPTextModel(CLIPTextConfig(**SDXL_TINY_TEXT_1)).eval(),
            CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TINY_TEXT_2)).eval())


def tiny_sdxl_unet(time_cond_proj_dim=None):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**SDXL_TINY_UNET, time_cond_proj_dim=time_cond_proj_dim).eval()


def tiny_sdxl_vae():
    """The SD1.5 twin's tiny AutoencoderKL with SDXL's scaling factor (force_upcast off: it is fp32 anyway)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(4, 4, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4,
                         layers_per_block=1, scaling_factor=0.13025, force_upcast=False).eval()


def tiny_sdxl_modules():
    """Every tiny SDXL torch module, built in a fixed order from one seed (independent of tiny_modules(): the SD
    twins are untouched): the exported ONNX files and scripts/golden/sdxl.py get the same weights."""
    import torch

    torch.manual_seed(SDXL_TINY_SEED)
    te1, te2 = tiny_sdxl_text_encoders()
    mods = {"text_encoder": te1, "text_encoder_2": te2}
    for name, spec in SDXL_TINY_MODELS.items():
        mods[name] = {"unet": tiny_sdxl_unet(spec["cond"]),
                      "vae": tiny_sdxl_vae() if spec["vae"] == "sd" else tiny_taesd()}
    return mods


def tiny_sdxl_pipeline(mods, model, scheduler=None, cls=None):
    """A diffusers SDXL pipeline (StableDiffusionXLPipeline unless `cls`) on the tiny modules, with the two CLIP
    tokenizers (pads <|endoftext|> and !), force_zeros_for_empty_prompt as SDXL base and Turbo, no watermark."""
    from diffusers import LCMScheduler, StableDiffusionXLPipeline

    cls = cls or StableDiffusionXLPipeline
    pipe = cls(vae=mods[model]["vae"], text_encoder=mods["text_encoder"], text_encoder_2=mods["text_encoder_2"],
               tokenizer=clip_vocab.sd1_tokenizer(pad_token="<|endoftext|>"),
               tokenizer_2=clip_vocab.sd1_tokenizer(pad_token="!"), unet=mods[model]["unet"],
               scheduler=scheduler or LCMScheduler(), force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_clip_tokenizer_folder(folder, pad_token):
    """The CLIP tokenizer as `save_pretrained` of transformers 4.x's CLIPTokenizer writes it (the transformers
    optimum's exporter requires, < 4.58): vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json.
    transformers 5 writes tokenizer.json + tokenizer_config.json instead; real exports may have either."""
    import json

    os.makedirs(folder, exist_ok=True)
    vocab, merges = clip_vocab.vocab_and_merges()

    def dump(name, obj):
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

    dump("vocab.json", vocab)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(" ".join(m) + "\n" for m in merges))

    def added(content, normalized):
        return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False, "single_word": False}

    start, end = added("<|startoftext|>", True), added("<|endoftext|>", True)
    pad = end if pad_token == "<|endoftext|>" else added(pad_token, pad_token in ("<|startoftext|>",))
    dump("special_tokens_map.json", {"bos_token": start, "eos_token": end, "pad_token": pad, "unk_token": end})
    decoder = {"49406": {**start, "special": True}, "49407": {**end, "special": True}}
    if pad_token not in ("<|startoftext|>", "<|endoftext|>"):
        decoder = {str(vocab[pad_token]): {**added(pad_token, False), "special": True}, **decoder}
    dump("tokenizer_config.json", {
        "added_tokens_decoder": decoder, "bos_token": "<|startoftext|>", "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>", "errors": "replace", "extra_special_tokens": {}, "model_max_length": 77,
        "pad_token": pad_token, "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"})


def export_optimum_folder(pipe, out):
    """A diffusers pipeline (StableDiffusionPipeline or StableDiffusionXLPipeline) in the layout
    `optimum-cli export onnx` writes (optimum-onnx 0.1.0): model_index.json, scheduler/scheduler_config.json,
    tokenizer/ (+ tokenizer_2/), and text_encoder/ (+ text_encoder_2/), unet/, vae_encoder/, vae_decoder/ each with
    model.onnx and config.json; opset 18; the UNet's `timestep` a float32 scalar; SDXL text encoders output every
    hidden state. No model.toml. (optimum-onnx itself needs transformers < 4.58, not installable beside our 5.x.)"""
    import copy

    os.makedirs(out, exist_ok=True)
    xl = getattr(pipe, "text_encoder_2", None) is not None
    encoders = ("text_encoder", "text_encoder_2") if xl else ("text_encoder",)
    for name in encoders:
        te = getattr(pipe, name)
        os.makedirs(os.path.join(out, name), exist_ok=True)
        if xl:
            export_text_encoder_xl(te, os.path.join(out, name, "model.onnx"), optimum=True, opset=18)
        else:
            export_text_encoder_optimum_sd(te, os.path.join(out, name, "model.onnx"))
        cfg = copy.deepcopy(te.config)  # what optimum sets on the config before it saves it
        if xl:
            cfg.output_hidden_states = True
        cfg.export_model_type = "clip-text-with-projection" if hasattr(te, "text_projection") else "clip-text"
        cfg.architectures = [type(te).__name__]  # as from_pretrained leaves them
        cfg.dtype = "float32"
        cfg.save_pretrained(os.path.join(out, name))
    os.makedirs(os.path.join(out, "unet"), exist_ok=True)
    export_unet_xl(pipe.unet, os.path.join(out, "unet", "model.onnx"), optimum=True, opset=18)
    pipe.unet.save_config(os.path.join(out, "unet"))
    for part in ("vae_encoder", "vae_decoder"):
        os.makedirs(os.path.join(out, part), exist_ok=True)
        pipe.vae.save_config(os.path.join(out, part))
    export_vae_optimum(pipe.vae, out)
    pipe.scheduler.save_pretrained(os.path.join(out, "scheduler"))
    write_clip_tokenizer_folder(os.path.join(out, "tokenizer"), pipe.tokenizer.pad_token)
    if xl:
        write_clip_tokenizer_folder(os.path.join(out, "tokenizer_2"), pipe.tokenizer_2.pad_token)
    pipe.save_config(out)
    print(f"  wrote {out}/ (optimum layout)", flush=True)


def build_tiny_sdxl(models_dir):
    """The tiny SDXL twins, tiny-clip-sdxl (both encoders), the fp16 twin and the two optimum-layout folders
    (tiny-sd15-optimum from tiny-sd15-lcm-lora's torch modules). Writes nothing of the SD twins."""
    from diffusers import LCMScheduler, StableDiffusionPipeline

    t0 = time.time()
    mods = tiny_sdxl_modules()
    clip_dir = os.path.join(models_dir, SDXL_TINY_CLIP)
    os.makedirs(clip_dir, exist_ok=True)
    print(f"{SDXL_TINY_CLIP} (both SDXL text encoders; tokenizer: ../tiny-clip/tokenizer.json)", flush=True)
    export_text_encoder_xl(mods["text_encoder"], os.path.join(clip_dir, "text_encoder.onnx"))
    export_text_encoder_xl(mods["text_encoder_2"], os.path.join(clip_dir, "text_encoder_2.onnx"))
    for name, spec in SDXL_TINY_MODELS.items():
        print(name, flush=True)
        folder = os.path.join(models_dir, name)
        export_sdxl_folder(folder, unet=mods[name]["unet"], vae=mods[name]["vae"], vae_kind=spec["vae"],
                           timestep_kind="float32-batch", latent_hw=8, image_hw=64)
        files = {"unet": "unet.onnx", "vae-encoder": "vae_encoder.onnx", "vae-decoder": "vae_decoder.onnx"}
        files.update(SDXL_TINY_FILES_SHARED)
        write_sdxl_manifest(folder, name=name, description=f"TINY RANDOM weights for tests; mimics {spec['what']}",
                            files=files, unet=mods[name]["unet"], vae_kind=spec["vae"],
                            latent_scale=float(mods[name]["vae"].config.scaling_factor), defaults=spec["defaults"],
                            native_size=spec["native"], force_zeros=True, scheduler=spec.get("scheduler"))
    for twin, source in SDXL_TINY_FP16_TWINS.items():
        print(twin, flush=True)
        src = os.path.join(models_dir, source)
        # The real export converts madebyollin/sdxl-vae-fp16-fix here; the twin's random VAE stands in for it.
        convert_folder_fp16(src, os.path.join(models_dir, twin), vae_src=src)
    print("tiny-sdxl-optimum", flush=True)
    export_optimum_folder(tiny_sdxl_pipeline(mods, OPTIMUM_TINY["tiny-sdxl-optimum"]),
                          os.path.join(models_dir, "tiny-sdxl-optimum"))
    print("tiny-sd15-optimum", flush=True)
    sd = tiny_modules()
    base = OPTIMUM_TINY["tiny-sd15-optimum"]
    sd_pipe = StableDiffusionPipeline(vae=sd[base]["vae"], text_encoder=sd["text_encoder"],
                                      tokenizer=clip_vocab.sd1_tokenizer(pad_token=TINY_MODELS[base][4]),
                                      unet=sd[base]["unet"], scheduler=LCMScheduler(), safety_checker=None,
                                      feature_extractor=None, requires_safety_checker=False)
    export_optimum_folder(sd_pipe, os.path.join(models_dir, "tiny-sd15-optimum"))
    print(f"tiny-sdxl: {time.time() - t0:.1f}s", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# SDXL, continued (`tiny-sdxl-extra`): the Euler-kind twins (SDXL-Lightning 4-step and 1-step) and the SDXL ControlNet
# pair. Written by their own command, from their own seeds: `tiny-sdxl` and everything it wrote stay byte for byte.
#
# SDXL ControlNet (latentcam's names, as the SD1.5 pair's plus the SDXL UNet's added conditioning):
#   controlnet.onnx       sample f32 [B,4,h,w], timestep f32 [B], encoder_hidden_states f32 [B,77,D],
#                         controlnet_cond f32 [B,3,8h,8w] (RGB 0..1), conditioning_scale f32 [] (scalar),
#                         (timestep_cond f32 [B,256] only if the ControlNet has time_cond_proj_dim),
#                         text_embeds f32 [B,P], time_ids f32 [B,6]
#                         -> down_block_res_samples_0..N-1, mid_block_res_sample (N = 9 for SDXL, 4 for the tiny twin)
#   unet_controlnet.onnx  unet.onnx's inputs (sample, timestep, encoder_hidden_states, [timestep_cond], text_embeds,
#                         time_ids) + down_block_additional_residuals_0..N-1, mid_block_additional_residual
#                         -> out_sample
# The ControlNet gets the same text_embeds and time_ids as the UNet (diffusers' SDXL ControlNet pipelines pass the
# UNet's added_cond_kwargs to it unless guess_mode).

def _xl_controlnet_wrappers():
    import torch

    class ControlNetXLWrap(torch.nn.Module):
        def __init__(self, controlnet):
            super().__init__()
            self.m = controlnet
            self.with_cond = getattr(controlnet.config, "time_cond_proj_dim", None) is not None

        def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale, *rest):
            timestep_cond = rest[0] if self.with_cond else None
            added = {"text_embeds": rest[-2], "time_ids": rest[-1]}
            down, mid = self.m(sample, timestep, encoder_hidden_states, controlnet_cond,
                               conditioning_scale=conditioning_scale, timestep_cond=timestep_cond,
                               added_cond_kwargs=added, return_dict=False)
            return (*down, mid)

    class UNetControlNetXLWrap(torch.nn.Module):
        def __init__(self, unet, n_down):
            super().__init__()
            self.m = unet
            self.n_down = n_down
            self.with_cond = unet.config.time_cond_proj_dim is not None

        def forward(self, sample, timestep, encoder_hidden_states, *rest):
            timestep_cond = None
            if self.with_cond:
                timestep_cond, rest = rest[0], rest[1:]
            text_embeds, time_ids, rest = rest[0], rest[1], rest[2:]
            assert len(rest) == self.n_down + 1, (len(rest), self.n_down)
            return self.m(sample, timestep, encoder_hidden_states, timestep_cond=timestep_cond,
                          added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids},
                          down_block_additional_residuals=tuple(rest[:-1]), mid_block_additional_residual=rest[-1],
                          return_dict=False)[0]

    return ControlNetXLWrap, UNetControlNetXLWrap


def export_controlnet_pair_xl(controlnet, unet, folder, timestep_kind="float32-batch", latent_hw=8,
                              controlnet_file="controlnet.onnx", unet_file="unet_controlnet.onnx"):
    """controlnet.onnx + unet_controlnet.onnx of an SDXL folder (the table above): export_controlnet_pair's files with
    `text_embeds` [B,P] and `time_ids` [B,6] on both, the timestep float32 [B] (or a scalar: float32-scalar)."""
    import torch

    cfg = unet.config
    if controlnet.config.cross_attention_dim != cfg.cross_attention_dim or \
            tuple(controlnet.config.block_out_channels) != tuple(cfg.block_out_channels) or \
            controlnet.config.addition_embed_type != "text_time":
        raise SystemExit(f"ControlNet (cross_attention_dim {controlnet.config.cross_attention_dim}, blocks "
                         f"{tuple(controlnet.config.block_out_channels)}, addition_embed_type "
                         f"{controlnet.config.addition_embed_type}) does not fit the SDXL UNet "
                         f"({cfg.cross_attention_dim}, {tuple(cfg.block_out_channels)}, text_time)")
    if timestep_kind not in ("float32-batch", "float32-scalar"):
        raise SystemExit(f"SDXL exports take a float32 timestep ([B] or scalar), not {timestep_kind}")
    ControlNetXLWrap, UNetControlNetXLWrap = _xl_controlnet_wrappers()
    batch = 2
    gen = torch.Generator().manual_seed(0)  # example inputs only; the global RNG (module weights) is untouched
    sample = torch.randn(batch, cfg.in_channels, latent_hw, latent_hw, generator=gen)
    timestep = _timestep_example(timestep_kind, batch)
    ehs = torch.randn(batch, 77, cfg.cross_attention_dim, generator=gen)
    cond = torch.rand(batch, 3, 8 * latent_hw, 8 * latent_hw, generator=gen)
    scale = torch.tensor(1.0)
    pooled_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    side = float(8 * latent_hw)
    text_embeds = torch.randn(batch, pooled_dim, generator=gen)
    time_ids = torch.tensor([[side, side, 0.0, 0.0, side, side]] * batch)
    n_down = len(controlnet.controlnet_down_blocks)
    lat_axes = {0: "batch", 2: "height", 3: "width"}
    res_axes = [{0: "batch", 2: f"res_height_{i}", 3: f"res_width_{i}"} for i in range(n_down)]
    mid_axes = {0: "batch", 2: "mid_height", 3: "mid_width"}

    c_names = ["sample", "timestep", "encoder_hidden_states", "controlnet_cond", "conditioning_scale"]
    c_args = [sample, timestep, ehs, cond, scale]
    c_axes = {"sample": lat_axes, "encoder_hidden_states": {0: "batch"},
              "controlnet_cond": {0: "batch", 2: "image_height", 3: "image_width"}}
    if timestep_kind != "float32-scalar":
        c_axes["timestep"] = {0: "batch"}
    if getattr(controlnet.config, "time_cond_proj_dim", None) is not None:
        c_names.append("timestep_cond")
        c_args.append(torch.randn(batch, controlnet.config.time_cond_proj_dim, generator=gen))
        c_axes["timestep_cond"] = {0: "batch"}
    c_names += ["text_embeds", "time_ids"]
    c_args += [text_embeds, time_ids]
    c_axes["text_embeds"] = {0: "batch"}
    c_axes["time_ids"] = {0: "batch"}
    c_out = [CONTROLNET_DOWN.format(i) for i in range(n_down)] + [CONTROLNET_MID]
    for i in range(n_down):
        c_axes[CONTROLNET_DOWN.format(i)] = res_axes[i]
    c_axes[CONTROLNET_MID] = mid_axes
    wrap = ControlNetXLWrap(controlnet).eval()
    _export(wrap, tuple(c_args), os.path.join(folder, controlnet_file), c_names, c_out, c_axes)

    with torch.no_grad():
        residuals = wrap(*c_args)
    u_names = ["sample", "timestep", "encoder_hidden_states"]
    u_args = [sample, timestep, ehs]
    u_axes = {"sample": lat_axes, "encoder_hidden_states": {0: "batch"}, "out_sample": lat_axes}
    if timestep_kind != "float32-scalar":
        u_axes["timestep"] = {0: "batch"}
    if cfg.time_cond_proj_dim is not None:
        u_names.append("timestep_cond")
        u_args.append(torch.randn(batch, cfg.time_cond_proj_dim, generator=gen))
        u_axes["timestep_cond"] = {0: "batch"}
    u_names += ["text_embeds", "time_ids"]
    u_args += [text_embeds, time_ids]
    u_axes["text_embeds"] = {0: "batch"}
    u_axes["time_ids"] = {0: "batch"}
    for i in range(n_down):
        u_names.append(UNET_DOWN.format(i))
        u_axes[UNET_DOWN.format(i)] = res_axes[i]
    u_names.append(UNET_MID)
    u_axes[UNET_MID] = mid_axes
    u_args += list(residuals)
    _export(UNetControlNetXLWrap(unet, n_down), tuple(u_args), os.path.join(folder, unet_file), u_names,
            ["out_sample"], u_axes)
    return {"controlnet": controlnet_file, "unet-controlnet": unet_file}


# The twins `tiny-sdxl-extra` writes: name -> what it mimics, the tiny SDXL model whose VAE (and, for a ControlNet, UNet)
# it references, its own seed (each module from its own: none moves another's weights), defaults (the real preset's),
# model.toml's [scheduler] (None: LCM).
SDXL_TINY_EXTRA = {
    "tiny-sdxl-lightning-4step": dict(
        what="SDXL-Lightning 4-step (its own distilled UNet; Euler, trailing spacing, epsilon prediction; SDXL VAE)",
        base="tiny-sdxl-lcm-lora", seed=104, defaults=SDXL_PRESETS["sdxl-lightning-4step"]["defaults"],
        scheduler=SDXL_PRESETS["sdxl-lightning-4step"]["scheduler"], native=1024),
    "tiny-sdxl-lightning-1step": dict(
        what="SDXL-Lightning 1-step (its own UNet predicting the SAMPLE, x0, not the noise; Euler, trailing; SDXL VAE)",
        base="tiny-sdxl-lcm-lora", seed=101, defaults=SDXL_PRESETS["sdxl-lightning-1step"]["defaults"],
        scheduler=SDXL_PRESETS["sdxl-lightning-1step"]["scheduler"], native=1024),
}
# SDXL ControlNet twins: name -> the tiny SDXL model whose UNet, VAE, encoders it references, and the ControlNet's seed.
SDXL_TINY_CONTROLNETS = {"tiny-sdxl-controlnet": dict(base="tiny-sdxl-lcm-lora", seed=201)}


def tiny_sdxl_extra_modules(mods=None):
    """tiny_sdxl_modules() (unchanged: same seed, same order) plus the extra twins' modules, each from its own seed:
    the Lightning UNets (the tiny SDXL UNet config) and the SDXL ControlNets (tiny_controlnet of the base's UNet: random
    zero convolutions, the conditioning embedding's gain). Golden scripts get the weights of the exported files."""
    import torch

    mods = mods or tiny_sdxl_modules()
    for name, spec in SDXL_TINY_EXTRA.items():
        torch.manual_seed(spec["seed"])
        mods[name] = {"unet": tiny_sdxl_unet(), "vae": mods[spec["base"]]["vae"]}
    for name, spec in SDXL_TINY_CONTROLNETS.items():
        torch.manual_seed(spec["seed"])
        base = mods[spec["base"]]
        mods[name] = {"controlnet": tiny_controlnet(base["unet"]), "unet": base["unet"], "vae": base["vae"]}
    return mods


def build_tiny_sdxl_extra(models_dir):
    """The Lightning twins (own unet.onnx; VAE, encoders and tokenizer referenced) and the SDXL ControlNet twin (own
    controlnet.onnx + unet_controlnet.onnx; the rest referenced). Writes nothing else."""
    t0 = time.time()
    mods = tiny_sdxl_extra_modules()
    for name, spec in SDXL_TINY_EXTRA.items():
        print(name, flush=True)
        folder = os.path.join(models_dir, name)
        os.makedirs(folder, exist_ok=True)
        export_unet_xl(mods[name]["unet"], os.path.join(folder, "unet.onnx"), "float32-batch")
        base = spec["base"]
        files = {"unet": "unet.onnx", "vae-encoder": f"../{base}/vae_encoder.onnx",
                 "vae-decoder": f"../{base}/vae_decoder.onnx", **SDXL_TINY_FILES_SHARED}
        write_sdxl_manifest(folder, name=name, description=f"TINY RANDOM weights for tests; mimics {spec['what']}; "
                            f"VAE referenced from {base}",
                            files=files, unet=mods[name]["unet"], vae_kind=SDXL_TINY_MODELS[base]["vae"],
                            latent_scale=float(mods[name]["vae"].config.scaling_factor), defaults=spec["defaults"],
                            native_size=spec["native"], force_zeros=True, scheduler=spec["scheduler"])
    for name, spec in SDXL_TINY_CONTROLNETS.items():
        print(name, flush=True)
        folder = os.path.join(models_dir, name)
        os.makedirs(folder, exist_ok=True)
        base = spec["base"]
        files = {"unet": f"../{base}/unet.onnx", "vae-encoder": f"../{base}/vae_encoder.onnx",
                 "vae-decoder": f"../{base}/vae_decoder.onnx", **SDXL_TINY_FILES_SHARED}
        files.update(export_controlnet_pair_xl(mods[name]["controlnet"], mods[name]["unet"], folder))
        write_sdxl_manifest(folder, name=name,
                            description=f"TINY RANDOM weights for tests: {base} (UNet, VAE, text encoders referenced) "
                            "with a tiny random SDXL ControlNet (text_embeds + time_ids; zero convolutions randomised) "
                            "and the same UNet taking its residuals",
                            files=files, unet=mods[name]["unet"], vae_kind=SDXL_TINY_MODELS[base]["vae"],
                            latent_scale=float(mods[name]["vae"].config.scaling_factor),
                            defaults=SDXL_TINY_MODELS[base]["defaults"], native_size=SDXL_TINY_MODELS[base]["native"],
                            force_zeros=True, scheduler=SDXL_TINY_MODELS[base].get("scheduler"))
    print(f"tiny-sdxl-extra: {time.time() - t0:.1f}s", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Random SDXL-shaped models (speed checks, scripts/gpu_bench.sh --family sdxl): upstream configs as dicts, random
# weights, no download. The same export functions as `real sdxl-*` write them.
#
# Time and memory at full size. Measured on this project's 2-vCPU, 24 GB machine (2026-12-08): the random SDXL UNet
# (2,567.5 M parameters, 10.3 GB fp32) builds in 38 s (serial: the same with 1 thread) at 10.8 GB; the bigG text
# encoder (694.7 M) builds in 19 s and exports (one 2.8 GB .onnx.data) in 37 s at 6.5 GB peak. Estimated from
# those (the full UNet export was not run here: ~24 GB peak): the whole fp32 folder ~5-8 min (UNet export ~3-4 min:
# one traced forward at 512² batch 2, then 10 GB written twice) and ~25 GB peak; --fp16 adds ~4-6 min and ~60 GB
# for the CUDA fusion (ONNX Runtime's optimizer holds several copies), or ~2 min and ~25 GB with --no-fuse (plain
# float16 conversion). Disk: ~14 GB fp32 (UNet 10.3, text encoders 3.3) + ~5 GB fp16. --tiny (SDXL_TINY_* configs,
# DESIGN §7's twin) builds in ~15 s here: the CPU smoke test.

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (2,567.5 M parameters; SDXL-Turbo has the same UNet).
# diffusers names the heads per level `attention_head_dim` (5, 10, 20: 64 channels each).
SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816,  # 6 time_ids x 256 + text encoder 2's pooled 1280
                 norm_num_groups=32, norm_eps=1e-5, act_fn="silu", flip_sin_to_cos=True, freq_shift=0,
                 downsample_padding=1, center_input_sample=False)
# the same repo's text_encoder (CLIP ViT-L/14's text tower, 123.1 M; CLIPTextModel) and text_encoder_2 (OpenCLIP
# ViT-bigG/14's, 694.7 M; CLIPTextModelWithProjection). Tokenizer 1 pads with <|endoftext|>, tokenizer 2 with "!".
SDXL_TEXT_1 = dict(CLIP_L)
SDXL_TEXT_2 = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                   num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280,
                   bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
# madebyollin/taesdxl: AutoencoderTiny's default config, like TAESD (2.4 M; scale 1.0, latents as they are).
TAESDXL_SHAPE = dict(TAESD)
# the SDXL VAE (AutoencoderKL as SD1.5's, scale 0.13025; madebyollin/sdxl-vae-fp16-fix has the same shape).
SDXL_VAE = dict(SD15_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=False)


def random_sdxl_modules(vae="taesd", tiny=False, seed=0):
    """(unet, vae, text_encoder, text_encoder_2) with random weights, built on the CPU in a fixed order from `seed`:
    scripts/gpu_bench.py's torch baseline calls this with the same arguments and gets the ONNX export's weights.
    tiny: DESIGN §7's tiny twin (SDXL_TINY_*: the same ports, the UNet two levels deep), for CPU smoke tests."""
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    if tiny:
        unet = tiny_sdxl_unet()
        ae = tiny_taesd() if vae == "taesd" else tiny_sdxl_vae()
        te1, te2 = tiny_sdxl_text_encoders()
    else:
        unet = UNet2DConditionModel(**SDXL_UNET).eval()
        ae = (AutoencoderTiny(**TAESDXL_SHAPE) if vae == "taesd" else AutoencoderKL(**SDXL_VAE)).eval()
        te1 = CLIPTextModel(CLIPTextConfig(**SDXL_TEXT_1)).eval()
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2)).eval()
    return unet, ae, te1, te2


def build_random_sdxl(out, vae="taesd", tiny=False, fp16=False, fuse=True, image_hw=512):
    """OUT: fp32 SDXL-shaped folder (UNet with text_embeds/time_ids, TAESDXL- or SDXL-VAE-shaped VAE, both text
    encoders, one tokenizer file for both); fp16: OUT-fp16 as `real sdxl-* --fp16` makes it (UNet + VAE float16,
    fused for the CUDA EP unless fuse=False; text encoders referenced in float32)."""
    t = time.time()
    unet, ae, te1, te2 = random_sdxl_modules(vae, tiny)
    n = sum(p.numel() for p in unet.parameters()) / 1e6
    n_text = sum(p.numel() for m in (te1, te2) for p in m.parameters()) / 1e6
    print(f"random SDXL-shaped modules built in {time.time() - t:.1f}s (UNet {n:.1f}M parameters, text encoders "
          f"{n_text:.1f}M){' TINY' if tiny else ''}", flush=True)
    os.makedirs(out, exist_ok=True)
    t = time.time()
    export_text_encoder_xl(te1, os.path.join(out, "text_encoder.onnx"))
    export_text_encoder_xl(te2, os.path.join(out, "text_encoder_2.onnx"))
    del te1, te2
    print(f"  text encoders: {time.time() - t:.1f}s", flush=True)
    t = time.time()
    export_sdxl_folder(out, unet=unet, vae=ae, vae_kind=vae, timestep_kind="float32-batch", latent_hw=image_hw // 8,
                       image_hw=image_hw)
    print(f"  UNet + VAE: {time.time() - t:.1f}s", flush=True)
    shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "tiny-clip", "tokenizer.json"),
                os.path.join(out, "tokenizer.json"))
    what = "TAESDXL" if vae == "taesd" else "SDXL VAE"
    files = {"unet": "unet.onnx", "vae-encoder": "vae_encoder.onnx", "vae-decoder": "vae_decoder.onnx",
             "text-encoder": "text_encoder.onnx", "tokenizer": "tokenizer.json",
             "text-encoder-2": "text_encoder_2.onnx", "tokenizer-2": "tokenizer.json"}
    write_sdxl_manifest(out, name=os.path.basename(os.path.abspath(out)),
                        description=f"RANDOM weights with SDXL UNet / {what} / CLIP-L + OpenCLIP bigG shapes"
                        f"{' (TINY: DESIGN §7 twin)' if tiny else ''}, SDXL-Turbo's defaults: speed checks only, "
                        "the output is noise",
                        files=files, unet=unet, vae_kind=vae, latent_scale=float(ae.config.scaling_factor),
                        defaults=SDXL_PRESETS["sdxl-turbo"]["defaults"],
                        native_size=SDXL_PRESETS["sdxl-turbo"]["native"],
                        force_zeros=True, scheduler={"prediction-type": "epsilon"})
    if fp16:
        del unet, ae
        # The random SDXL VAE stands in for madebyollin/sdxl-vae-fp16-fix (random weights do not overflow).
        convert_folder_fp16(out, fp16_folder_for(out), fuse="cuda" if fuse else None,
                            vae_src=out if vae == "sd" else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    real = sub.add_parser("real", help="export a real model from the hub (internet)")
    real.add_argument("preset", choices=sorted(PRESETS) + sorted(SDXL_PRESETS))
    real.add_argument("out")
    real.add_argument("--vae", choices=["sd", "taesd", "taesdxl"], default="sd",
                      help="sd: the model's own VAE; taesd (SD presets): madebyollin/taesd; taesdxl (SDXL presets): "
                      "madebyollin/taesdxl")
    real.add_argument("--timestep", choices=TIMESTEP_KINDS, default="float32-batch",
                      help="timestep input type of the exported UNet (latentcam accepts all three)")
    real.add_argument("--fp16", action="store_true",
                      help="also write OUT-fp16: fp16 UNet + VAE fused for the CUDA EP (text encoder referenced)")
    real.add_argument("--controlnet", choices=sorted(set(CONTROLNETS) | set(SDXL_CONTROLNETS)), default=None,
                      help="also export a ControlNet (controlnet.onnx) and the UNet with residual inputs "
                      "(unet_controlnet.onnx); model.toml gets `controlnet` and `unet-controlnet`. openpose: "
                      f"{CONTROLNETS['openpose']['repo']} (SD1.5 presets) or {SDXL_CONTROLNETS['openpose']['repo']} "
                      f"(SDXL presets); openpose-xinsir: {SDXL_CONTROLNETS['openpose-xinsir']['repo']} (SDXL)")
    tiny = sub.add_parser("tiny", help="build the tiny random test models (no download)")
    tiny.add_argument("models_dir", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "models"))
    tiny_in = sub.add_parser("tiny-inpaint", help="build only the tiny 9-channel inpainting twin (no download; needs "
                             "the tiny-sd15-lcm-lora and tiny-clip twins it references)")
    tiny_in.add_argument("models_dir", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "models"))
    tiny_xl = sub.add_parser("tiny-sdxl", help="build only the tiny random SDXL twins and the optimum-layout "
                             "folders (no download)")
    tiny_xl.add_argument("models_dir", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "models"))
    tiny_xe = sub.add_parser("tiny-sdxl-extra", help="build only the tiny SDXL-Lightning twins (Euler scheduler) and the "
                             "tiny SDXL ControlNet twin (no download; needs the tiny-sdxl twins it references)")
    tiny_xe.add_argument("models_dir", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "models"))
    rnd = sub.add_parser("random-sd15", help="random weights, real SD1.5 shapes (no download): speed checks")
    rnd.add_argument("out")
    rnd.add_argument("--vae", choices=["sd", "taesd"], default="taesd")
    rnd.add_argument("--timestep", choices=TIMESTEP_KINDS, default="float32-batch")
    rnd.add_argument("--fp16", action="store_true", help="also write OUT-fp16 (fused for the CUDA EP)")
    rnd.add_argument("--tiny", action="store_true", help="shrunk channels (same graph structure): CPU smoke test")
    rnd.add_argument("--size", type=int, default=512, help="image side the export traces at (axes stay dynamic)")
    rxl = sub.add_parser("random-sdxl", help="random weights, real SDXL shapes (no download): speed checks")
    rxl.add_argument("out")
    rxl.add_argument("--vae", choices=["taesd", "sd"], default="taesd",
                     help="taesd: TAESDXL-shaped (0..1, scale 1); sd: the SDXL VAE's shape (scale 0.13025)")
    rxl.add_argument("--fp16", action="store_true", help="also write OUT-fp16 (fused for the CUDA EP)")
    rxl.add_argument("--no-fuse", action="store_true",
                     help="with --fp16: ONNX Runtime's plain float16 conversion instead of the CUDA fusion (minutes "
                     "faster, half the memory at full size; runs on any EP, slower on the GPU)")
    rxl.add_argument("--tiny", action="store_true", help="DESIGN §7's tiny SDXL twin configs: CPU smoke test")
    rxl.add_argument("--size", type=int, default=512, help="image side the export traces at (axes stay dynamic)")
    f16 = sub.add_parser("fp16", help="fp16 twin of a model folder (UNet + VAE), checked against it")
    f16.add_argument("src")
    f16.add_argument("dst")
    f16.add_argument("--fuse", choices=["cuda"], default=None,
                     help="fuse with ONNX Runtime's transformers optimizer first (the result needs the CUDA EP)")
    f16.add_argument("--op-block-list", default="", help="comma-separated op types to keep in float32")
    f16.add_argument("--name", default=None, help="model name in model.toml (default: DST's folder name)")
    f16.add_argument("--vae-from", default=None, metavar="DIR",
                     help="convert DIR/vae_encoder.onnx and DIR/vae_decoder.onnx (an fp16-safe VAE with the same "
                     "latents) instead of SRC's; without it a VAE marked vae-fp32-only stays float32")
    f16.add_argument("--check-size", type=int, default=256,
                     help="side of the random image of the fp16-vs-fp32 check (0: no check; --fuse: no check)")
    a = ap.parse_args()
    if a.mode == "real":
        if a.preset in SDXL_PRESETS:
            if a.vae == "taesd":
                ap.error(f"{a.preset} is an SDXL preset: --vae sd or taesdxl")
            if a.controlnet and a.controlnet not in SDXL_CONTROLNETS:
                ap.error(f"--controlnet {a.controlnet} is an SD1.5 ControlNet; SDXL presets take "
                         f"{', '.join(sorted(SDXL_CONTROLNETS))}")
            if a.timestep == "int64-batch":
                ap.error("SDXL presets export a float32 timestep ([B] by default, or --timestep float32-scalar)")
            export_real_sdxl(a.preset, a.out, a.vae, a.timestep, a.fp16, a.controlnet)
        else:
            if a.controlnet and a.controlnet not in CONTROLNETS:
                ap.error(f"--controlnet {a.controlnet} is an SDXL ControlNet (SDXL presets only)")
            if a.vae == "taesdxl":
                ap.error(f"--vae taesdxl is for the SDXL presets ({', '.join(sorted(SDXL_PRESETS))})")
            export_real(a.preset, a.out, a.vae, a.timestep, a.fp16, a.controlnet)
    elif a.mode == "tiny-inpaint":
        build_tiny_inpaint(os.path.normpath(a.models_dir))
    elif a.mode == "tiny-sdxl":
        build_tiny_sdxl(os.path.normpath(a.models_dir))
    elif a.mode == "tiny-sdxl-extra":
        build_tiny_sdxl_extra(os.path.normpath(a.models_dir))
    elif a.mode == "random-sd15":
        build_random_sd15(a.out, a.vae, a.tiny, a.fp16, a.timestep, a.size)
    elif a.mode == "random-sdxl":
        if a.size % 64:
            ap.error(f"--size must be a multiple of 64 (got {a.size})")
        build_random_sdxl(a.out, a.vae, a.tiny, a.fp16, not a.no_fuse, a.size)
    elif a.mode == "fp16":
        blocks = [b for b in a.op_block_list.split(",") if b]
        convert_folder_fp16(a.src, a.dst, fuse=a.fuse, op_block_list=blocks, name=a.name, vae_src=a.vae_from)
        if a.check_size and not a.fuse:
            check_fp16(a.src, a.dst, size=a.check_size)
    else:
        build_tiny(os.path.normpath(a.models_dir))


if __name__ == "__main__":
    main()
