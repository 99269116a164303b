"""Writes the example's data set, data.pt (x: 512×2, y = sin(x0) + 0.5*x1), into the folder
given (default: data/), for uploading to object storage as the job's data_url."""

import os
import sys

import torch

out = sys.argv[1] if len(sys.argv) > 1 else "data"
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(42)
x = torch.rand(512, 2, generator=g) * 4 - 2
y = (torch.sin(x[:, 0]) + 0.5 * x[:, 1]).unsqueeze(1)
torch.save({"x": x, "y": y}, os.path.join(out, "data.pt"))
print(f"wrote {out}/data.pt")
