#!/usr/bin/env python3
"""The Python half of scripts/gpu_bench.sh.

  torch  --json FILE [...]   times the plain diffusers/torch img2img frame loop (fp16, 1 LCM step) on the SAME random
                             weights that `export_models.py random-sd15` (--family sdxl: `random-sdxl`) exported
                             (rebuilt from the same seed), eager and with one torch.cuda.CUDAGraph per frame, at each
                             batch size (--size A,B,...: every batch at the first size, batch 1 at the others).
  table  RESULTS_DIR         prints one table from the JSON files gpu_bench.sh collected there.

The torch frame, per call of batch b (b frames at once, like latentcam's stream batch):
  u8 HWC frames host -> device (pinned, async), -> fp16 NCHW in -1..1, VAE encode (TAESD: latents as they are;
  SD VAE: distribution mean x 0.18215), noise to t=499 with fixed noise, UNet (epsilon), LCM step
  (x0, then c_out * x0 + c_skip * x), VAE decode, -> u8 HWC, device -> host; synchronize.
Prompt embeddings are computed once (latentcam caches them too) and are not part of the frame.
SDXL (--family sdxl): the same frame with the UNet's added conditions, computed once per size like the prompt:
  encoder_hidden_states = concat(CLIP-L hidden_states[-2], bigG hidden_states[-2]) [b,77,2048], text_embeds = bigG's
  pooled projection [b,1280], time_ids = [H, W, 0, 0, H, W] [b,6]; VAE: TAESDXL (latents as they are) or the SDXL
  VAE (mean x 0.13025). The same scaled-linear betas and LCM step at t=499 (SDXL-Turbo's 1 step is that step).
"""
import argparse
import glob
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _time_batch(b, a, *, torch, dev, dtype, h, w, unet, vae, ehs1, taesd, scale, t, sa, s1a, c_skip, c_out,
                added1=None):
    """Eager and (on CUDA) CUDA-graph timings of the frame loop at batch b. added1: SDXL's added conditions
    (text_embeds, time_ids) for one frame, expanded to the batch like the prompt."""
    pin = dev == "cuda"
    gen = torch.Generator().manual_seed(0)
    host_in = torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8, generator=gen)
    host_out = torch.empty((b, h, w, 3), dtype=torch.uint8)
    if pin:
        host_in, host_out = host_in.pin_memory(), host_out.pin_memory()
    frames_in = torch.empty((b, h, w, 3), dtype=torch.uint8, device=dev)
    frames_out = torch.empty((b, h, w, 3), dtype=torch.uint8, device=dev)
    noise = torch.randn((b, 4, h // 8, w // 8), generator=gen).to(dev, dtype)
    ehs = ehs1.expand(b, -1, -1).contiguous()
    ts = torch.full((b,), float(t), device=dev, dtype=dtype)
    extra = {}
    if added1 is not None:
        extra["added_cond_kwargs"] = {k: v.expand(b, -1).contiguous() for k, v in added1.items()}

    def work():
        x = frames_in.permute(0, 3, 1, 2).to(dtype) * (2.0 / 255.0) - 1.0
        if taesd:
            lat = vae.encode(x).latents
        else:
            lat = vae.encode(x).latent_dist.mean * scale
        noisy = sa * lat + s1a * noise
        eps = unet(noisy, ts, ehs, return_dict=False, **extra)[0]
        x0 = (noisy - s1a * eps) / sa
        den = c_out * x0 + c_skip * noisy
        img = vae.decode(den / scale).sample
        frames_out.copy_(((img * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1))

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    def capture():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):  # warm on a side stream (cuDNN autotune, allocator) before the capture
                work()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            work()
        return graph

    results = []
    variants = ["eager"] + (["cudagraph"] if dev == "cuda" and not a.no_graph else [])
    for variant in variants:
        with torch.inference_mode():
            t0 = time.perf_counter()
            graph = capture() if variant == "cudagraph" else None
            fn = graph.replay if graph is not None else work

            def frame(fn=fn):
                frames_in.copy_(host_in, non_blocking=pin)
                fn()
                host_out.copy_(frames_out, non_blocking=pin)
                sync()

            frame()
            first_ms = (time.perf_counter() - t0) * 1e3
            for _ in range(a.warmup):
                frame()
            calls = max(1, math.ceil(a.frames / b))
            per_call, bare = [], []
            for _ in range(calls):
                t1 = time.perf_counter()
                frame()
                per_call.append((time.perf_counter() - t1) * 1e3)
            for _ in range(calls):
                t1 = time.perf_counter()
                fn()
                sync()
                bare.append((time.perf_counter() - t1) * 1e3)
        r = dict(engine="torch " + variant, precision=str(dtype).split(".")[-1], batch=b, size=f"{w}x{h}",
                 cuda_graph=variant == "cudagraph", frames=calls * b,
                 pipeline_fps=b * 1e3 / statistics.mean(per_call), bare_fps=b * 1e3 / statistics.mean(bare),
                 latency_p50_ms=_pct(per_call, 0.5), latency_p95_ms=_pct(per_call, 0.95), first_frame_ms=first_ms)
        results.append(r)
        print(f"RESULT torch {variant} {w}x{h} batch {b}: {r['pipeline_fps']:.1f} fps, "
              f"p50 {r['latency_p50_ms']:.2f} ms, "
              f"p95 {r['latency_p95_ms']:.2f} ms, first {first_ms:.0f} ms", flush=True)
        del graph, fn
    return results


def _sd15_conditions(torch, text):
    """SD1.5: the empty prompt's last_hidden_state [1,77,768] (fp32 on the CPU, once)."""
    ids = torch.full((1, 77), 49407, dtype=torch.int64)
    ids[0, 0] = 49406
    return text(input_ids=ids).last_hidden_state, None


def _sdxl_conditions(torch, te1, te2):
    """SDXL: the empty prompt through both encoders (tokenizer 1 pads with <|endoftext|> 49407, tokenizer 2 with
    "!" 0): context = concat of the penultimate hidden states [1,77,768+1280], pooled = bigG's text_embeds [1,1280]."""
    ids1 = torch.full((1, 77), 49407, dtype=torch.int64)
    ids2 = torch.zeros((1, 77), dtype=torch.int64)
    for ids in (ids1, ids2):
        ids[0, 0], ids[0, 1] = 49406, 49407
    o1 = te1(input_ids=ids1, output_hidden_states=True)
    o2 = te2(input_ids=ids2, output_hidden_states=True)
    return torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1), o2.text_embeds


def torch_bench(a):
    import torch

    import export_models as em

    dev = a.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("error: torch sees no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    dtype = torch.float16 if dev == "cuda" else torch.float32  # CPU: a smoke test of this script only
    torch.backends.cudnn.benchmark = True
    sdxl = a.family == "sdxl"
    t0 = time.perf_counter()
    if sdxl:
        unet, vae, te1, te2 = em.random_sdxl_modules(a.vae, a.tiny)
        text = (te1, te2)
    else:
        unet, vae, text = em.random_sd15_modules(a.vae, a.tiny)
        text = (text,)
    print(f"torch: {'SDXL' if sdxl else 'SD1.5'}-shaped modules rebuilt in {time.perf_counter() - t0:.1f}s "
          f"({a.vae} VAE{', tiny' if a.tiny else ''})", flush=True)
    taesd = a.vae == "taesd"
    scale = 1.0 if taesd else (0.13025 if sdxl else 0.18215)
    with torch.inference_mode():
        ehs1, pooled1 = (_sdxl_conditions if sdxl else _sd15_conditions)(torch, *text)
        ehs1 = ehs1.to(dev, dtype)
        pooled1 = None if pooled1 is None else pooled1.to(dev, dtype)
    del text
    if sdxl:
        del te1, te2
    unet = unet.to(dev, dtype)
    vae = vae.to(dev, dtype)
    t = 499
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alpha = float(torch.cumprod(1 - betas, 0)[t])
    sa, s1a = math.sqrt(alpha), math.sqrt(1 - alpha)
    st = t * 10.0
    c_skip, c_out = 0.25 / (st * st + 0.25), st / math.sqrt(st * st + 0.25)

    results = []
    sizes = ", ".join(f"{w}x{h}" for w, h in a.sizes)
    meta = dict(device=torch.cuda.get_device_name() if dev == "cuda" else "cpu", torch=torch.__version__,
                diffusers=__import__("diffusers").__version__, size=sizes, vae=a.vae, tiny=a.tiny)
    if sdxl:
        meta["family"] = "sdxl"
    for i, (w, h) in enumerate(a.sizes):
        added1 = None
        if sdxl:  # time_ids = [H, W, 0, 0, H, W] of the processed image
            added1 = dict(text_embeds=pooled1,
                          time_ids=torch.tensor([[h, w, 0, 0, h, w]], dtype=dtype, device=dev))
        ctx = dict(torch=torch, dev=dev, dtype=dtype, h=h, w=w, unet=unet, vae=vae, ehs1=ehs1, taesd=taesd,
                   scale=scale, t=t, sa=sa, s1a=s1a, c_skip=c_skip, c_out=c_out, added1=added1)
        for b in a.batches if i == 0 else [1]:
            results += _time_batch(b, a, **ctx)
            if dev == "cuda":
                torch.cuda.empty_cache()
            with open(a.json, "w") as f:  # after every batch: a later failure (out of memory) keeps these
                json.dump(dict(meta=meta, results=results), f, indent=1)
    return 0


def _fmt(v, digits=1):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def _report(data):
    """The dict that holds `pipeline_fps`: the top level, or the first one nested in lists/dicts (one per size)."""
    if isinstance(data, dict):
        if "pipeline_fps" in data:
            return data
        items = list(data.values())
    elif isinstance(data, list):
        items = data
    else:
        return None
    for item in items:
        found = _report(item)
        if found is not None:
            return found
    return data if isinstance(data, dict) and data else None


def _area(size):
    try:
        w, h = (int(v) for v in size.split("x"))
        return w * h
    except (AttributeError, ValueError):
        return 0


def table(a):
    """One table from RESULTS_DIR: latentcam_*.json (one `latentcam bench --json` each, plus a sidecar
    latentcam_*.meta.json that gpu_bench.sh writes: precision, batch, cuda graph, exit status, size, family) and
    torch.json. Several sizes: a size column, rows by size. SDXL: a column with the ratio to torch's CUDA-graph loop
    at the same size and batch."""
    rows, notes = [], []
    family = "sd15"
    for meta_path in sorted(glob.glob(os.path.join(a.results, "latentcam_*.meta.json"))):
        with open(meta_path) as f:
            meta = json.load(f)
        family = meta.get("family", family)
        row = dict(engine="latentcam", precision=meta["precision"], batch=meta["batch"],
                   cuda_graph=meta["cuda_graph"], size=meta.get("size"))
        path = meta_path[: -len(".meta.json")] + ".json"
        data = None
        if meta.get("status", 0) == 0 and os.path.exists(path):
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, ValueError) as e:
                meta["error"] = f"unreadable JSON: {e}"
        data = _report(data)
        if data is None:
            row["error"] = meta.get("error") or f"exit status {meta.get('status')}"
        else:
            missing = [k for k in ("pipeline_fps", "bare_fps", "latency_p50_ms", "latency_p95_ms", "first_frame_ms")
                       if k not in data]
            if missing:
                notes.append(f"{os.path.basename(path)} lacks {', '.join(missing)}")
            row.update({k: data.get(k) for k in ("pipeline_fps", "bare_fps", "latency_p50_ms", "latency_p95_ms",
                                                  "first_frame_ms")})
        rows.append(row)
    torch_path = os.path.join(a.results, "torch.json")
    torch_meta = {}
    if os.path.exists(torch_path):
        with open(torch_path) as f:
            t = json.load(f)
        torch_meta = t.get("meta", {})
        family = torch_meta.get("family", family)
        rows += t.get("results", [])
    if os.path.exists(os.path.join(a.results, "torch.error")):  # failed (maybe after some sizes or batches)
        with open(os.path.join(a.results, "torch.error")) as f:
            rows.append(dict(engine="torch", precision="float16", batch="-", cuda_graph="-", error=f.read().strip()))
    if not rows:
        print(f"no results in {a.results}", file=sys.stderr)
        return 1
    sizes = sorted({r["size"] for r in rows if r.get("size")}, key=_area)
    rows.sort(key=lambda r: sizes.index(r["size"]) if r.get("size") in sizes else len(sizes))  # stable
    with_size = len(sizes) > 1
    with_ratio = family == "sdxl"
    graph_fps = {(r.get("size"), r["batch"]): r.get("pipeline_fps") for r in rows
                 if r["engine"] == "torch cudagraph" and not r.get("error")}
    head = (["size"] if with_size else []) + ["engine", "precision", "batch k", "CUDA graph", "fps", "bare fps",
                                              "p50 ms", "p95 ms", "first frame ms"]
    if with_ratio:
        head.append("fps / torch graph")
    left = 5 if with_size else 4  # left-aligned label columns; fps follows them
    lines = []
    for r in rows:
        graph = r["cuda_graph"] if isinstance(r["cuda_graph"], str) else ("on" if r["cuda_graph"] else "off")
        prec = {"float16": "fp16", "float32": "fp32"}.get(r["precision"], r["precision"])
        cells = ([r.get("size") or "-"] if with_size else []) + [r["engine"], prec, str(r["batch"]), graph]
        if r.get("error"):
            cells += ["failed: " + r["error"].splitlines()[-1][:90]] + [""] * (len(head) - left - 1)
        else:
            cells += [_fmt(r.get("pipeline_fps")), _fmt(r.get("bare_fps")), _fmt(r.get("latency_p50_ms"), 2),
                      _fmt(r.get("latency_p95_ms"), 2), _fmt(r.get("first_frame_ms"), 0)]
            if with_ratio:
                ref = graph_fps.get((r.get("size"), r["batch"]))
                fps = r.get("pipeline_fps")
                cells.append(_fmt(fps / ref, 2) if fps and ref else "-")
        lines.append(cells)
    widths = [max([len(h)] + [len(c[i]) for c in lines if not (i >= left and c[left].startswith("failed"))])
              for i, h in enumerate(head)]

    def fmt(cells):
        out = []
        for i, c in enumerate(cells):
            if i == left and c.startswith("failed"):
                return " | ".join(out + [c])
            out.append(c.ljust(widths[i]) if i < left else c.rjust(widths[i]))
        return " | ".join(out)

    what = "img2img, 1 LCM step"
    if family == "sdxl":
        what = ("SDXL-shaped random model" + (" (TINY)" if torch_meta.get("tiny") else " (2.6 B UNet)") +
                ", img2img, 1 LCM step (SDXL-Turbo's 1 step)")
    title = a.title or f"latentcam vs diffusers/torch: {what}"
    if torch_meta:
        title += f" ({torch_meta.get('size', '')}, {torch_meta.get('vae', '')} VAE, {torch_meta.get('device', '')}, " \
                 f"torch {torch_meta.get('torch', '')})"
    print(title)
    print(fmt(head))
    print("-+-".join("-" * w for w in widths))
    for cells in lines:
        print(fmt(cells))
    print("fps: frames per second through the whole frame (latentcam: its bench pipeline; torch: u8 frames in, "
          "u8 frames out, host copies included); bare fps: the models alone; latency: per frame (latentcam) or per "
          "batch call (torch); batch k: frames per UNet call (latentcam engine.stream-batch).")
    if with_ratio:
        print("fps / torch graph: fps over torch's CUDA-graph loop at the same size and batch (above 1: faster).")
    for n in notes:
        print("note:", n)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("torch", help="time the diffusers/torch fp16 frame loop")
    t.add_argument("--json", required=True)
    t.add_argument("--family", choices=["sd15", "sdxl"], default="sd15",
                   help="sd15: `export_models.py random-sd15`'s weights; sdxl: `random-sdxl`'s")
    t.add_argument("--vae", choices=["taesd", "sd"], default="taesd",
                   help="taesd: TAESD / TAESDXL shape; sd: the SD / SDXL VAE's")
    t.add_argument("--batches", default="1,4", help="comma-separated batch sizes (at the first --size)")
    t.add_argument("--frames", type=int, default=200, help="timed frames per variant (calls = frames / batch)")
    t.add_argument("--warmup", type=int, default=5, help="untimed calls after the first")
    t.add_argument("--size", default="512x512",
                   help="WxH, or a comma-separated list: every --batches at the first size, batch 1 at the others")
    t.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: fp32 smoke test of this script")
    t.add_argument("--tiny", action="store_true",
                   help="the tiny shapes of `random-sd15 --tiny` / `random-sdxl --tiny`")
    t.add_argument("--no-graph", action="store_true", help="eager only")
    tb = sub.add_parser("table", help="print the table from a results folder")
    tb.add_argument("results")
    tb.add_argument("--title", default=None)
    a = ap.parse_args()
    if a.mode == "torch":
        try:
            a.sizes = [tuple(int(v) for v in one.split("x")) for one in a.size.lower().split(",") if one]
            if not a.sizes or any(len(wh) != 2 for wh in a.sizes):
                raise ValueError
            a.batches = [int(v) for v in a.batches.split(",") if v]
        except ValueError:
            print(f"error: bad --size {a.size!r} or --batches {a.batches!r}", file=sys.stderr)
            return 2
        if any(v % 64 or v < 64 for wh in a.sizes for v in wh) or not a.batches or min(a.batches) < 1:
            print("error: --size sides must be multiples of 64 and batches >= 1", file=sys.stderr)
            return 2
        return torch_bench(a)
    return table(a)


if __name__ == "__main__":
    sys.exit(main())
