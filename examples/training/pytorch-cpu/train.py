"""A PyTorch CPU training script as it runs on the seed's platform, unchanged on Atelier:
fits a small MLP to a generated data set (y = sin(x0) + 0.5*x1) read from its `--data_url`,
checkpoints every epoch to its `--train_url` (`ckpt_{epoch}.pth`, dict keys net, optimizer,
epoch: the seed's convention, spec/training.md §2.9), resumes from the newest checkpoint
there, prints the loss as a metric line, and runs distributed (gloo) when the job has more
than one worker (WORLD_SIZE > 1, rendezvous from MASTER_ADDR/MASTER_PORT)."""

import argparse
import os
import re
import time

import torch
import torch.distributed as dist

p = argparse.ArgumentParser()
p.add_argument("--data_url", required=True)
p.add_argument("--train_url", required=True)
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--lr", type=float, default=0.05)
p.add_argument("--sleep", type=float, default=0.0, help="seconds per epoch (to watch it)")
args = p.parse_args()

world = int(os.environ.get("WORLD_SIZE", "1"))
if world > 1:
    dist.init_process_group("gloo")
rank = dist.get_rank() if world > 1 else 0

data = torch.load(os.path.join(args.data_url, "data.pt"))
x, y = data["x"], data["y"]
# Each worker takes its share of the rows.
x, y = x[rank::world], y[rank::world]

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(net.parameters(), lr=args.lr)

os.makedirs(args.train_url, exist_ok=True)
ckpts = [int(m.group(1)) for f in os.listdir(args.train_url)
         if (m := re.fullmatch(r"ckpt_(\d+)\.pth", f))]
start = 0
if ckpts:
    state = torch.load(os.path.join(args.train_url, f"ckpt_{max(ckpts)}.pth"))
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["optimizer"])
    start = state["epoch"]
    print(f"resumed from epoch {start}", flush=True)

for epoch in range(start + 1, args.epochs + 1):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(net(x), y)
    loss.backward()
    if world > 1:
        for prm in net.parameters():
            dist.all_reduce(prm.grad)
            prm.grad /= world
    opt.step()
    if rank == 0:
        torch.save({"net": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch},
                   os.path.join(args.train_url, f"ckpt_{epoch}.pth"))
        print(f"[metric] loss={loss.item():.6f} step={epoch}", flush=True)
    time.sleep(args.sleep)

if world > 1:
    dist.destroy_process_group()
print("done", flush=True)
