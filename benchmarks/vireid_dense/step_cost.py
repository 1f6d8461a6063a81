"""Training-step cost of LbA (CMAlign on layer3 and layer4, ID-consistency and dense triplet losses) relative to
the baseline on the same batch, timed interleaved; and the test-time cost, which must equal the baseline's
(CMAlign is not called at test time and has no parameters).

    uv run --locked python benchmarks/vireid_dense/step_cost.py                       # tiny CNN, 64x32, 8x(4+4)
    uv run --locked python benchmarks/vireid_dense/step_cost.py --backbone resnet50 --size 288 144 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vireid_dense.cmalign import CMAlign
from vireid_dense.models import TwoStreamNet
from vireid_dense.module import LbAModule


def build(method: str, backbone: str, num_classes: int, ids: int, pos: int, state: dict | None) -> LbAModule:
    module = LbAModule(method=method, backbone=backbone)
    module.net = TwoStreamNet(num_classes, backbone)
    if state is not None:
        module.net.load_state_dict(state)
    module.align3, module.align4 = CMAlign(ids, pos), CMAlign(ids, pos, seed=1)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="tiny", choices=["tiny", "resnet50"])
    parser.add_argument("--size", type=int, nargs=2, default=[64, 32])
    parser.add_argument("--ids", type=int, default=8)
    parser.add_argument("--pos", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    base = build("baseline", args.backbone, 32, args.ids, args.pos, None)
    full = build("full", args.backbone, 32, args.ids, args.pos, base.net.state_dict())
    base.to(dev).train()
    full.to(dev).train()
    n = args.ids * args.pos
    xv, xt = torch.randn(n, 3, *args.size, device=dev), torch.randn(n, 3, *args.size, device=dev)
    y = torch.arange(args.ids, device=dev).repeat_interleave(args.pos)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step(m: LbAModule) -> float:
        sync()
        t = time.perf_counter()
        m.losses(xv, xt, y, y)["loss"].backward()
        sync()
        m.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    def embed(m: LbAModule) -> float:
        m.eval()
        sync()
        t = time.perf_counter()
        m.net.embed(xv, "visible")
        m.net.embed(xt, "infrared")
        sync()
        m.train()
        return time.perf_counter() - t

    for m in (base, full):  # warm-up
        step(m), embed(m)
    train = {"baseline": [], "full": []}
    test = {"baseline": [], "full": []}
    for _ in range(args.repeats):
        for name, m in (("baseline", base), ("full", full)):
            train[name].append(step(m))
            test[name].append(embed(m))
    med = lambda xs: statistics.median(xs)
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in (("baseline", base), ("full", full))}
    print(f"{args.backbone}, {args.size[0]}x{args.size[1]}, batch {args.ids} ids x ({args.pos} visible + {args.pos} "
          f"infrared), {args.device}, median of {args.repeats} interleaved repeats")
    print("| | baseline | full (LbA) | full / baseline |")
    print("|---|---|---|---|")
    print(f"| training step (forward + backward), ms | {1e3 * med(train['baseline']):.1f} | "
          f"{1e3 * med(train['full']):.1f} | {med(train['full']) / med(train['baseline']):.2f} |")
    print(f"| test embedding of the batch, ms | {1e3 * med(test['baseline']):.1f} | {1e3 * med(test['full']):.1f} | "
          f"{med(test['full']) / med(test['baseline']):.2f} |")
    print(f"| parameters | {params['baseline']:,} | {params['full']:,} | "
          f"{params['full'] / params['baseline']:.2f} |")


if __name__ == "__main__":
    main()
