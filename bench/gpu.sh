#!/usr/bin/env bash
# GPU benchmark for the lent device machine (no network there): run within 5 minutes.
#   Prepare here:  .venv/bin/pip download -d wheelhouse -r envs/requirements.txt   (plus the CUDA torch wheel)
#   Run there:     bash bench/gpu.sh           (carry: wheelhouse)
# Prints training it/s (128^3 patch, batch 2, AMP), the data-wait fraction of the step time (zarr
# sampler with workers), and whole-volume sliding-window inference time at 1 mm (182x218x182).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import voxflow" 2>/dev/null; then
  python3 -m venv /tmp/vf && . /tmp/vf/bin/activate
  pip install -q --no-index --find-links wheelhouse -r envs/requirements.txt
  pip install -q --no-deps --no-build-isolation -e .
fi
python3 - <<'PY'
import tempfile, time, numpy as np, torch
from voxflow.training.augment import AugmentConfig, augment_batch
from voxflow.training.losses import make_loss
from voxflow.nn.networks import build_network
from voxflow.nn.sampler import PatchBatches, make_loader
from voxflow.nn.sliding_window import sliding_window_predict
from voxflow.preprocess.store import write_subject_store
assert torch.cuda.is_available(), "no CUDA device"
dev = torch.device("cuda"); fmt = torch.channels_last_3d
print("device", torch.cuda.get_device_name(0))
tmp = tempfile.mkdtemp(); rng = np.random.default_rng(0); paths = []
for i in range(4):
    img = rng.normal(size=(4, 182, 218, 182)).astype(np.float32)
    lab = np.zeros(img.shape[1:], np.uint8); lab[80:110, 90:130, 70:100] = 1 + i % 3
    p = f"{tmp}/s{i}.zarr"; paths.append(p)
    write_subject_store(p, img, np.ones_like(lab), lab, ["a", "b", "c", "d"], (1, 1, 1), (0, 0, 0), np.eye(3), {})
patch = (128, 128, 128)
net = build_network("3d", 4, 4, patch, base_features=32).to(dev, memory_format=fmt)
opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
loss_fn = make_loss("dice_ce", 4); scaler = torch.amp.GradScaler("cuda")
loader = iter(make_loader(PatchBatches(paths, patch, 2, label_values=(0, 1, 2, 3)), workers=8))
gen = torch.Generator(device=dev).manual_seed(0); wait = 0.0; n = 30
for i in range(n + 5):
    if i == 5: torch.cuda.synchronize(); t0 = time.time(); wait = 0.0
    tw = time.time(); x, y = next(loader); wait += time.time() - tw
    x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
    x, y = augment_batch(x, y, AugmentConfig(), gen)
    with torch.autocast("cuda", dtype=torch.float16):
        loss = loss_fn(net(x.contiguous(memory_format=fmt)), y)
    opt.zero_grad(); scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
torch.cuda.synchronize(); dt = time.time() - t0
print(f"gpu train_it_s={n / dt:.2f} data_wait_fraction={wait / dt:.3f}")
net.eval(); vol = rng.normal(size=(4, 182, 218, 182)).astype(np.float32)
with torch.no_grad():
    t0 = time.time()
    sliding_window_predict(vol, lambda x: net(x.contiguous(memory_format=fmt)), patch, 4, batch_size=2,
                           mirror_axes=(0, 1, 2), device=dev, amp=True)
    torch.cuda.synchronize()
print(f"gpu infer_1mm_s={time.time() - t0:.2f} (8x mirroring TTA)")
PY
