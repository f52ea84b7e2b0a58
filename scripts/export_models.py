#!/usr/bin/env python3
"""Export diffusion models into latentcam model folders (model.toml + ONNX files).

Two modes share every export function; only where the torch modules come from differs:

  real PRESET OUT_DIR   downloads a model from the Hugging Face hub (needs internet) and exports it.
  tiny [MODELS_DIR]     builds tiny RANDOM-weight models from configs alone (no download) with exactly the
                        real I/O names, element types and ranks; these are committed under models/ for tests.

Real presets (hub ids):
  sd15-lcm-lora        stable-diffusion-v1-5/stable-diffusion-v1-5 with latent-consistency/lcm-lora-sdv1-5 fused
  sd-turbo             stabilityai/sd-turbo
  lcm-dreamshaper-v7   SimianLuo/LCM_Dreamshaper_v7 (full LCM: the UNet takes `timestep_cond`)
  `--vae taesd` swaps in madebyollin/taesd (SD1 Tiny AutoEncoder) for any of them (faster, slightly softer).

ONNX I/O names follow optimum's Stable Diffusion export, so folders made by `optimum-cli export onnx` work too:
  text_encoder.onnx  input_ids int32 [B,77]          -> last_hidden_state f32 [B,77,D], pooler_output
  unet.onnx          sample f32 [B,C,h,w], timestep, encoder_hidden_states f32 [B,77,D] (+ timestep_cond f32 [B,256])
                     -> out_sample f32 [B,C,h,w]
  vae_encoder.onnx   sample f32 [B,3,H,W]            -> latent_sample f32 [B,C,H/8,W/8] (distribution mean, unscaled)
  vae_decoder.onnx   latent_sample f32 [B,C,h,w]     -> sample f32 [B,3,8h,8w]
TAESD-family VAEs are exported in the 0..1 RGB convention of the original taesd (image-range = "zero-to-one").
"""
import argparse
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_vocab  # noqa: E402

OPSET = 17
TIMESTEP_KINDS = ("int64-batch", "float32-batch", "float32-scalar")


# ----------------------------------------------------------------------------------------------------------------
# Export wrappers: fix each graph's I/O names and conventions.


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


def _export(module, args, path, input_names, output_names, dynamic_axes):
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            path,
            dynamo=False,
            opset_version=OPSET,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    print(f"  wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)", flush=True)


def export_text_encoder(text_encoder, path):
    ids = torch.zeros(1, 77, dtype=torch.int32)
    _export(
        TextEncoderWrap(text_encoder),
        (ids,),
        path,
        ["input_ids"],
        ["last_hidden_state", "pooler_output"],
        {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}, "pooler_output": {0: "batch"}},
    )


def export_unet(unet, path, timestep_kind, latent_hw=8):
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
    _export(UNetWrap(unet, timestep_kind), tuple(args), path, names, ["out_sample"], axes)


def export_vae(vae, folder, zero_to_one, image_hw=64):
    image = torch.rand(1, 3, image_hw, image_hw)
    if not zero_to_one:
        image = image * 2 - 1
    img_axes = {0: "batch", 2: "height", 3: "width"}
    lat_axes = {0: "batch", 2: "latent_height", 3: "latent_width"}
    enc = VaeEncoderWrap(vae, zero_to_one)
    _export(enc, (image,), os.path.join(folder, "vae_encoder.onnx"), ["sample"], ["latent_sample"],
            {"sample": img_axes, "latent_sample": lat_axes})
    with torch.no_grad():
        latent = enc(image)
    _export(VaeDecoderWrap(vae, zero_to_one), (latent,), os.path.join(folder, "vae_decoder.onnx"), ["latent_sample"],
            ["sample"], {"latent_sample": lat_axes, "sample": img_axes})


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


def write_manifest(folder, *, name, description, latent_channels, latent_scale, image_range, files, pad_token,
                   defaults, size_multiple, scheduler=None):
    lines = [f"# Written by scripts/export_models.py. {description}", f"name = {_toml_value(name)}",
             f"description = {_toml_value(description)}", f"latent-channels = {latent_channels}",
             f"latent-scale = {_toml_value(latent_scale)}", f"image-range = {_toml_value(image_range)}",
             f"size-multiple = {size_multiple}", "",
             "[files]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in files.items()]
    lines += ["", "[tokenizer]", f"pad-token = {_toml_value(pad_token)}", "", "[scheduler]", 'kind = "lcm"']
    lines += [f"{k} = {_toml_value(v)}" for k, v in (scheduler or {}).items()]
    lines += ["", "[defaults]"] + [f"{k} = {_toml_value(v)}" for k, v in defaults.items()]
    with open(os.path.join(folder, "model.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"  wrote {os.path.join(folder, 'model.toml')}", flush=True)


def save_tokenizer(tokenizer, path):
    tokenizer.backend_tokenizer.save(path, pretty=False)
    print(f"  wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Real models (hub)

PRESETS = {
    "sd15-lcm-lora": dict(repo="stable-diffusion-v1-5/stable-diffusion-v1-5", lora="latent-consistency/lcm-lora-sdv1-5",
                          pad="<|endoftext|>", defaults=dict(steps=2, strength=0.5, guidance=1.0)),
    "sd-turbo": dict(repo="stabilityai/sd-turbo", lora=None, pad="!",
                     defaults=dict(steps=1, strength=0.5, guidance=1.0)),
    "lcm-dreamshaper-v7": dict(repo="SimianLuo/LCM_Dreamshaper_v7", lora=None, pad="<|endoftext|>",
                               defaults=dict(steps=2, strength=0.5, guidance=1.2)),
}


def export_real(preset, out, vae_choice, timestep_kind):
    from diffusers import AutoencoderTiny, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    p = PRESETS[preset]
    os.makedirs(out, exist_ok=True)
    pipe = StableDiffusionPipeline.from_pretrained(p["repo"], torch_dtype=torch.float32, safety_checker=None)
    if p["lora"]:
        pipe.load_lora_weights(p["lora"])
        pipe.fuse_lora()
        pipe.unload_lora_weights()  # keeps the fused weights, drops the adapter layers from the graph
    export_text_encoder(pipe.text_encoder, os.path.join(out, "text_encoder.onnx"))
    export_unet(pipe.unet, os.path.join(out, "unet.onnx"), timestep_kind, latent_hw=64)
    tok = CLIPTokenizer.from_pretrained(p["repo"], subfolder="tokenizer")
    save_tokenizer(tok, os.path.join(out, "tokenizer.json"))
    if vae_choice == "taesd":
        vae = AutoencoderTiny.from_pretrained("madebyollin/taesd", torch_dtype=torch.float32)
        export_vae(vae, out, zero_to_one=True, image_hw=512)
        scale, image_range = 1.0, "zero-to-one"
    else:
        export_vae(pipe.vae, out, zero_to_one=False, image_hw=512)
        scale, image_range = float(pipe.vae.config.scaling_factor), "minus-one-to-one"
    sched = pipe.scheduler.config
    scheduler = {"prediction-type": sched.get("prediction_type", "epsilon")}
    write_manifest(out, name=os.path.basename(os.path.abspath(out)),
                   description=f"{p['repo']}" + (f" + {p['lora']} (fused)" if p["lora"] else "") +
                   (" with madebyollin/taesd" if vae_choice == "taesd" else ""),
                   latent_channels=pipe.unet.config.in_channels, latent_scale=scale, image_range=image_range,
                   files={"unet": "unet.onnx", "vae-encoder": "vae_encoder.onnx", "vae-decoder": "vae_decoder.onnx",
                          "text-encoder": "text_encoder.onnx", "tokenizer": "tokenizer.json"},
                   pad_token=p["pad"], defaults=p["defaults"], scheduler=scheduler,
                   size_multiple=8 * 2 ** (len(pipe.unet.config.block_out_channels) - 1))


# ----------------------------------------------------------------------------------------------------------------
# Tiny random models (configs only): the real architectures, shrunk; the I/O contract is unchanged.

TINY_TEXT_HIDDEN = 8


def tiny_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=TINY_TEXT_HIDDEN, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return CLIPTextModel(cfg).eval()


def tiny_unet(latent_channels, time_cond_proj_dim=None, linear_projection=False):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=latent_channels, out_channels=latent_channels, layers_per_block=1,
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


def tiny_modules():
    """Every tiny torch module, built in a fixed order from one seed: the exported ONNX files and the golden
    scripts (scripts/golden/img2img.py) get the same weights."""
    torch.manual_seed(0)
    mods = {"text_encoder": tiny_text_encoder()}
    for name, (_, vae_kind, _, cond_dim, _, linear) in TINY_MODELS.items():
        mods[name] = {"unet": tiny_unet(4, cond_dim, linear), "vae": tiny_sd_vae() if vae_kind == "sd" else tiny_taesd()}
    mods["taef2-tiny"] = {"unet": tiny_unet(32)}
    return mods


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
                       defaults=dict(steps=2, strength=0.5, guidance=1.0), size_multiple=16)

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
                   pad_token="<|endoftext|>", defaults=dict(steps=2, strength=0.5, guidance=1.0), size_multiple=16)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    real = sub.add_parser("real", help="export a real model from the hub (internet)")
    real.add_argument("preset", choices=sorted(PRESETS))
    real.add_argument("out")
    real.add_argument("--vae", choices=["sd", "taesd"], default="sd")
    real.add_argument("--timestep", choices=TIMESTEP_KINDS, default="float32-batch",
                      help="timestep input type of the exported UNet (latentcam accepts all three)")
    tiny = sub.add_parser("tiny", help="build the tiny random test models (no download)")
    tiny.add_argument("models_dir", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "models"))
    a = ap.parse_args()
    if a.mode == "real":
        export_real(a.preset, a.out, a.vae, a.timestep)
    else:
        build_tiny(os.path.normpath(a.models_dir))


if __name__ == "__main__":
    main()
