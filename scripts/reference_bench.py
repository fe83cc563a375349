"""Times the reference PyTorch video U-Net (Video-as-Agent/VideoAgent, AVDC lineage) for the
same configs and measurements as `videoagent bench model`: forward pass (batch 1, 7 frames),
one DDIM plan (--plan-steps denoising steps, default 25) and one training step (batch 8, Adam,
fp32). On a GPU (--device cuda, the default) the forward pass and the plan are timed in fp32,
TF32 and bf16 autocast; on the CPU (--device cpu, --threads N) in fp32 only, and the TF32 and
bf16 entries are null. The reference code is not part of this repository: pass the folder that
holds its `guided_diffusion` package with --ref (and pure-Python deps with --site if the
machine lacks einops / einops_exts / tqdm).

    python3 scripts/reference_bench.py --ref REF --site SITE --json out.json
    python3 scripts/reference_bench.py --ref REF --device cpu --threads 2 --configs default \
        --reps 3 --train-reps 3 --plan-steps 20 --json out.json
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", required=True)
    ap.add_argument("--site")
    ap.add_argument("--json")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (CPU only)")
    ap.add_argument("--reps", type=int, default=10, help="timed forward passes")
    ap.add_argument("--plan-reps", type=int, default=2, help="timed DDIM plans (0: none)")
    ap.add_argument("--train-reps", type=int, default=3, help="timed training steps (0: none)")
    ap.add_argument("--plan-steps", type=int, default=25)
    ap.add_argument("--configs", default="default,ithor,metaworld")
    ap.add_argument("--unet-json", help="time this one config instead of --configs: a JSON "
                    "object with the fields of videoagent's UNetConfig (how `videoagent bench "
                    "model --reference` passes the config it measured)")
    ap.add_argument("--name", default="custom", help="the --unet-json config's name")
    args = ap.parse_args()
    if args.threads is not None and args.device != "cpu":
        ap.error("--threads applies to --device cpu only")
    if not 1 <= args.plan_steps <= 100:
        ap.error("--plan-steps must be in 1..=100 (the timesteps span 100)")
    if args.site:
        sys.path.insert(0, args.site)
    sys.path.insert(0, args.ref)
    import torch
    from guided_diffusion.guided_diffusion.unet import UNetModel

    presets = {
        "default": dict(image_size=(32, 32), model_channels=32, num_res_blocks=1,
                        attention_resolutions=(2, 4), channel_mult=(1, 2, 4), task_token_channels=64),
        "ithor": dict(image_size=(64, 64), model_channels=128, num_res_blocks=3,
                      attention_resolutions=(4, 8), channel_mult=(1, 2, 4), task_token_channels=512),
        "metaworld": dict(image_size=(128, 128), model_channels=128, num_res_blocks=2,
                          attention_resolutions=(8, 16), channel_mult=(1, 2, 3, 4, 5), task_token_channels=512),
    }
    cuda = args.device == "cuda"
    dev = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report = {"device": args.device, "gpu": torch.cuda.get_device_name(0) if cuda else None,
              "torch": torch.__version__, "threads": None if cuda else torch.get_num_threads(),
              "plan_steps": args.plan_steps, "configs": []}
    print(json.dumps({k: v for k, v in report.items() if k != "configs"}), flush=True)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timed(fn, reps):
        fn()
        sync()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        times.sort()
        return times[len(times) // 2] * 1e3

    def set_tf32(on):
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = on
            torch.backends.cudnn.allow_tf32 = on

    if args.unet_json:
        c = json.loads(args.unet_json)
        keys = ("model_channels", "num_res_blocks", "task_token_channels", "num_head_channels")
        p = {k: c[k] for k in keys}
        for k in ("image_size", "attention_resolutions", "channel_mult"):
            p[k] = tuple(c[k])
        configs = [(args.name, p, c["in_channels"], c["frames"])]
    else:
        configs = [(name, dict(presets[name], num_head_channels=32), 6, 7)
                   for name in args.configs.split(",")]
    plan_key = f"plan_ddim{args.plan_steps}"
    stride = 100 // args.plan_steps
    for name, p, in_ch, frames in configs:
        set_tf32(False)
        model = UNetModel(in_channels=in_ch, out_channels=3, dropout=0, conv_resample=True,
                          dims=3, num_classes=None, task_tokens=True, use_checkpoint=False,
                          use_fp16=False, **p).to(dev)
        h, w = p["image_size"]
        x = torch.randn(1, in_ch, frames, h, w, device=dev)
        t = torch.tensor([50], device=dev)
        tok = torch.randn(1, 12, p["task_token_channels"], device=dev)
        row = {"config": name, "params": sum(q.numel() for q in model.parameters())}
        model.eval()
        with torch.no_grad():
            row["fwd_fp32_ms"] = timed(lambda: model(x, t, tok), args.reps)

            def plan():
                v = torch.randn(1, 3, frames, h, w, device=dev)
                cond = x[:, 3:]
                for step in range(args.plan_steps):
                    ts = torch.tensor([99 - stride * step], device=dev)
                    v = v - 0.01 * model(torch.cat([v, cond], 1), ts, tok)
                return v

            row[f"{plan_key}_fp32_ms"] = timed(plan, args.plan_reps) if args.plan_reps else None
            if cuda:
                set_tf32(True)
                row["fwd_tf32_ms"] = timed(lambda: model(x, t, tok), args.reps)
                row[f"{plan_key}_tf32_ms"] = timed(plan, args.plan_reps)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    row["fwd_bf16_ms"] = timed(lambda: model(x, t, tok), args.reps)
                    row[f"{plan_key}_bf16_ms"] = timed(plan, args.plan_reps)
            else:
                for key in ("fwd_tf32_ms", f"{plan_key}_tf32_ms", "fwd_bf16_ms", f"{plan_key}_bf16_ms"):
                    row[key] = None
        set_tf32(False)
        row["train_step_b8_fp32_ms"] = None
        if args.train_reps:
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
            xb = torch.randn(8, in_ch, frames, h, w, device=dev)
            tb = torch.randint(0, 100, (8,), device=dev)
            tokb = torch.randn(8, 12, p["task_token_channels"], device=dev)

            def train_step():
                opt.zero_grad(set_to_none=True)
                loss = (model(xb, tb, tokb) - xb[:, :3]).pow(2).mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()

            row["train_step_b8_fp32_ms"] = timed(train_step, args.train_reps)
            del opt
        report["configs"].append(row)
        print(json.dumps(row), flush=True)
        del model
        if cuda:
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
