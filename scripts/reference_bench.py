"""Times the reference PyTorch video U-Net (Video-as-Agent/VideoAgent, AVDC lineage) on a GPU,
for the same configs and measurements as `videoagent bench model`: forward pass (batch 1,
7 frames) in fp32 / TF32 / bf16 autocast, one DDIM-25 plan (fp32, TF32) and one training
step (batch 8, Adam, fp32). The reference code is not part of this repository: pass the
folder that holds its `guided_diffusion` package with --ref (and pure-Python deps with
--site if the machine lacks einops / einops_exts / tqdm).

    python3 scripts/reference_bench.py --ref REF --site SITE --json out.json
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
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--configs", default="default,ithor,metaworld")
    args = ap.parse_args()
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
    dev = torch.device("cuda")
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "configs": []}

    def timed(fn, reps):
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        times.sort()
        return times[len(times) // 2] * 1e3

    for name in args.configs.split(","):
        p = presets[name]
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        model = UNetModel(in_channels=6, out_channels=3, dropout=0, conv_resample=True, dims=3,
                          num_classes=None, task_tokens=True, use_checkpoint=False, use_fp16=False,
                          num_head_channels=32, **p).to(dev)
        h, w = p["image_size"]
        x = torch.randn(1, 6, 7, h, w, device=dev)
        t = torch.tensor([50], device=dev)
        tok = torch.randn(1, 12, p["task_token_channels"], device=dev)
        row = {"config": name, "params": sum(q.numel() for q in model.parameters())}
        model.eval()
        with torch.no_grad():
            row["fwd_fp32_ms"] = timed(lambda: model(x, t, tok), args.reps)

            def plan():
                v = torch.randn(1, 3, 7, h, w, device=dev)
                cond = x[:, 3:]
                for step in range(25):
                    out = model(torch.cat([v, cond], 1), torch.tensor([99 - 4 * step], device=dev), tok)
                    v = v - 0.01 * out
                return v

            row["plan_ddim25_fp32_ms"] = timed(plan, 2)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            row["fwd_tf32_ms"] = timed(lambda: model(x, t, tok), args.reps)
            row["plan_ddim25_tf32_ms"] = timed(plan, 2)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                row["fwd_bf16_ms"] = timed(lambda: model(x, t, tok), args.reps)
                row["plan_ddim25_bf16_ms"] = timed(plan, 2)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
        xb = torch.randn(8, 6, 7, h, w, device=dev)
        tb = torch.randint(0, 100, (8,), device=dev)
        tokb = torch.randn(8, 12, p["task_token_channels"], device=dev)

        def train_step():
            opt.zero_grad(set_to_none=True)
            loss = (model(xb, tb, tokb) - xb[:, :3]).pow(2).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        row["train_step_b8_fp32_ms"] = timed(train_step, 3)
        report["configs"].append(row)
        print(json.dumps(row), flush=True)
        del model, opt
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
