"""Issue 14 part 2, GPU exploration: unsupervised binary codes for Fashion-MNIST ("BinGAN+").

Self-contained (PyTorch + numpy only; no torchvision, no TensorFlow, no project imports), so it
can be carried to a GPU machine alone with the four Fashion-MNIST idx files.

Status: smoke-tested on CPU at tiny sizes only; no GPU was lent when it was written, so its
GPU speed and results are unknown (issue 14's note). To carry the data under the device tool's
64 MiB limit, recompress the idx files with xz (read here as .gz, .xz or plain) into an ignored
folder such as runs/fmnist_xz/ and name that folder in `carry`.

README: python3 benchmarks/gpu/bingan_plus_explore.py --data runs/fmnist_xz --out $OUT \
            --variants contrastive,contrastive_mild,bingan_plus --epochs 100 --budget-seconds 450
  CPU smoke test: add --limit 2000 --epochs 1 --eval-every 1 (reduced protocol: 200 queries
  against 4,000 images). `--set name=value` overrides any config field for every variant.

One network per variant with 16-, 32- and 64-bit linear code heads trained jointly; each head
is evaluated with the shipped protocol: 1,000 queries = sorted default_rng(0).choice(70000,
1000) of all 70,000 images (train 60k then test 10k, file order), the other 69,000 the
database, relevance = same class, Hamming ranking with ties broken by database index, AP over
the top 1000 (sum of P@r at relevant ranks / relevant retrieved, 0 if none). Training uses the
60,000 training images only, without labels. PCA-ITQ on the pixels (fitted on the database,
as `zoo evaluate hashing` does) is printed once at the start: expect ~0.643 / 0.683 / 0.713.

Variants (config overrides, see VARIANTS): contrastive (CIBHash-like NT-Xent between two
views' straight-through sign codes + BinGAN's BRE), contrastive_mild / _aggressive /
_noflip / _nocrop / _nobre / _tanh (ablations), bingan_plus (GAN discriminator = the same
encoder, DCGAN generator, feature matching, DiffAugment on real and fake, NT-Xent + BRE + DMR
on D's code heads), bingan_plus_nocontrast (BinGAN-style: GAN + BRE + DMR only).

results.jsonl: one line per evaluation (variant, bits, epoch, map = sign-at-0 bits, map_median
= each bit thresholded at its median over the training images, seconds, config, losses),
flushed at once. The run stops before --budget-seconds: the remaining budget is shared
equally by the remaining variants, and each variant shortens its cosine schedule (after its
first epochs are timed) to fit its share, so every variant ends with an annealed evaluation.
"""

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BITS = (16, 32, 64)
TOP = 1000
FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
         "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}

BASE = dict(aug="aggressive", crop=True, flip=True, jitter=True, code="st", temperature=0.3,
            bre=0.1, dmr=0.0, contrast=1.0, gan=False, g_loss="fm", batch=256, lr=1e-3,
            g_lr=1e-3, beta1=0.9, width=64, hidden=512, latent=100, weight_decay=0.0)
VARIANTS = {
    "contrastive": {},
    "contrastive_mild": {"aug": "mild"},
    "contrastive_aggressive": {"aug": "aggressive"},
    "contrastive_noflip": {"flip": False},
    "contrastive_nocrop": {"crop": False},
    "contrastive_nobre": {"bre": 0.0},
    "contrastive_tanh": {"code": "tanh"},
    "bingan_plus": {"gan": True, "dmr": 0.5, "beta1": 0.5},
    "bingan_plus_nocontrast": {"gan": True, "dmr": 0.5, "beta1": 0.5, "contrast": 0.0},
}


# ----------------------------------------------------------------------------- data

def read_idx(directory, name):
    for candidate in (name, name + ".gz", name + ".xz"):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            with open(path, "rb") as handle:
                raw = handle.read()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            elif raw[:6] == b"\xfd7zXZ\x00":
                import lzma

                raw = lzma.decompress(raw)
            dims = raw[3]
            shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise SystemExit(f"missing {name}[.gz|.xz] in {directory}")


def load_fashion(directory):
    """(images uint8 [70000, 32, 32] zero-padded, labels [70000]), train then test."""
    x = np.concatenate([read_idx(directory, FILES["train_x"]), read_idx(directory, FILES["test_x"])])
    y = np.concatenate([read_idx(directory, FILES["train_y"]), read_idx(directory, FILES["test_y"])])
    return np.pad(x, ((0, 0), (2, 2), (2, 2))), y.astype(np.int64)


def split_queries(count, num_queries):
    queries = np.sort(np.random.default_rng(0).choice(count, num_queries, replace=False))
    return queries, np.setdiff1d(np.arange(count), queries)


# ----------------------------------------------------------------------------- protocol

def map_at_top(bits, labels, queries, database, top=TOP):
    """mAP@top of 0/1 codes (torch bool [N, K]) with stable ties (sort key = (distance, index))."""
    signs = bits.float() * 2 - 1
    k = signs.shape[1]
    db_signs, db_labels = signs[database], labels[database]
    index = torch.arange(len(database), device=signs.device)
    top = min(top, len(database))
    ranks = torch.arange(1, top + 1, device=signs.device, dtype=torch.float64)
    total = 0.0
    for start in range(0, len(queries), 250):
        q = queries[start:start + 250]
        distance = torch.round((k - signs[q] @ db_signs.T) / 2).long()
        order = torch.topk(distance * len(database) + index, top, dim=1, largest=False,
                           sorted=True).indices
        hits = (db_labels[order] == labels[q][:, None]).double()
        found = hits.sum(1)
        ap = (hits.cumsum(1) / ranks * hits).sum(1) / found.clamp(min=1)
        total += float(torch.where(found > 0, ap, torch.zeros_like(ap)).sum())
    return total / len(queries)


def itq_bits(database_x, all_x, bits_list, iterations=50):
    """{K: 0/1 bits of all_x}: PCA (fitted on database_x) to K dims, then ITQ (random orthogonal
    init from default_rng(0), 50 Procrustes iterations), as zoo.hashing.fit_itq."""
    x = database_x.reshape(len(database_x), -1).astype(np.float64)
    mean = x.mean(0)
    centred = (x - mean).astype(np.float32)
    covariance = (centred.T @ centred).astype(np.float64)
    values, vectors = np.linalg.eigh(covariance)
    vectors = vectors[:, np.argsort(values)[::-1]]
    out = {}
    for k in bits_list:
        directions = vectors[:, :k]
        largest = directions[np.argmax(np.abs(directions), axis=0), np.arange(k)]
        directions = directions * np.where(largest < 0, -1.0, 1.0)
        projected = (x - mean) @ directions
        q, r = np.linalg.qr(np.random.default_rng(0).standard_normal((k, k)))
        rotation = q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))
        for _ in range(iterations):
            codes = np.where(projected @ rotation >= 0, 1.0, -1.0)
            u, _, wt = np.linalg.svd(projected.T @ codes)
            rotation = u @ wt
        projection = (directions @ rotation).astype(np.float32)
        flat = all_x.reshape(len(all_x), -1).astype(np.float32)
        out[k] = (flat - mean.astype(np.float32)) @ projection >= 0
    return out


# ----------------------------------------------------------------------------- augmentation

def augment(x, cfg):
    """Differentiable per-sample augmentation of [N, 1, 32, 32] in [0, 1] (torch ops only):
    crop/scale/shift + flip via affine_grid/grid_sample, then brightness/contrast jitter."""
    n, dev = x.shape[0], x.device
    rand = lambda: torch.rand(n, device=dev)
    if cfg["crop"]:
        if cfg["aug"] == "aggressive":  # RandomResizedCrop(scale=(0.5, 1), ratio=(3/4, 4/3))
            area = 0.5 + 0.5 * rand()
            ratio = torch.exp(math.log(3 / 4) + math.log(16 / 9) * rand())
            w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
            cx, cy = (2 * rand() - 1) * (1 - w), (2 * rand() - 1) * (1 - h)
        else:  # mild: RandomResizedCrop(scale=(0.85, 1), ratio 1) + up to 2 px shift
            w = h = (0.85 + 0.15 * rand()).sqrt()
            shift = 2 * 2 / 32  # 2 px in [-1, 1] coordinates
            cx = (2 * rand() - 1) * (1 - w) + (2 * rand() - 1) * shift
            cy = (2 * rand() - 1) * (1 - h) + (2 * rand() - 1) * shift
    else:
        w = h = torch.ones(n, device=dev)
        cx = cy = torch.zeros(n, device=dev)
    flip = torch.where(rand() < 0.5, -1.0, 1.0) if cfg["flip"] else torch.ones(n, device=dev)
    if cfg["crop"] or cfg["flip"]:
        zero = torch.zeros(n, device=dev)
        theta = torch.stack([torch.stack([w * flip, zero, cx], 1),
                             torch.stack([zero, h, cy], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg["jitter"]:  # p = 0.8: brightness and contrast factors in [0.6, 1.4]
        apply = (rand() < 0.8).float()[:, None, None, None]
        bright = (0.6 + 0.8 * rand())[:, None, None, None]
        contrast = (0.6 + 0.8 * rand())[:, None, None, None]
        mean = x.mean((1, 2, 3), keepdim=True)
        jittered = ((x - mean) * contrast + mean) * bright
        x = (apply * jittered + (1 - apply) * x).clamp(0, 1)
    return x


# ----------------------------------------------------------------------------- networks

def block(cin, cout, kernel, stride):
    return [nn.Conv2d(cin, cout, kernel, stride, 1, bias=False), nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.2, inplace=True)]


class HashNet(nn.Module):
    """5-conv encoder (w-2w-2w-4w-4w, 32->16->8, global average pool), an optional shared
    hidden layer, linear code heads (one per code length) and, for the GAN, a real/fake logit."""

    def __init__(self, cfg, bits):
        super().__init__()
        w = cfg["width"]
        self.encoder = nn.Sequential(*block(1, w, 3, 1), *block(w, 2 * w, 4, 2),
                                     *block(2 * w, 2 * w, 3, 1), *block(2 * w, 4 * w, 4, 2),
                                     *block(4 * w, 4 * w, 3, 1), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten())
        features = 4 * w
        if cfg["hidden"]:
            self.hidden = nn.Sequential(nn.Linear(features, cfg["hidden"]),
                                        nn.LeakyReLU(0.2, inplace=True))
            features_h = cfg["hidden"]
        else:
            self.hidden, features_h = nn.Identity(), features
        self.heads = nn.ModuleList(nn.Linear(features_h, k) for k in bits)
        self.logit = nn.Linear(features, 1) if cfg["gan"] else None

    def forward(self, x):
        f = self.encoder(x)
        g = self.hidden(f)
        return f, [head(g) for head in self.heads], (self.logit(f) if self.logit else None)


class Generator(nn.Module):
    """DCGAN generator: latent -> 4x4x256 -> 8 -> 16 -> 32, sigmoid output in [0, 1]."""

    def __init__(self, latent):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(latent, 256 * 16, bias=False), nn.BatchNorm1d(256 * 16),
                                nn.ReLU(True))
        up = lambda cin, cout: [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                                nn.BatchNorm2d(cout), nn.ReLU(True)]
        self.net = nn.Sequential(*up(256, 128), *up(128, 64), *up(64, 32),
                                 nn.Conv2d(32, 1, 3, 1, 1), nn.Sigmoid())

    def forward(self, z):
        return self.net(self.fc(z).view(-1, 256, 4, 4))


class FrozenBNStats:
    """Forward fakes through D without letting them into its BatchNorm running statistics."""

    def __init__(self, model):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self):
        self.saved = [m.momentum for m in self.layers]
        for m in self.layers:
            m.momentum = 0.0

    def __exit__(self, *exc):
        for m, momentum in zip(self.layers, self.saved):
            m.momentum = momentum


# ----------------------------------------------------------------------------- losses

def nt_xent(a, b, temperature):
    z = F.normalize(torch.cat([a, b]).float(), dim=1)
    n = a.shape[0]
    sim = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device),
                                              float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def bre(u):
    """BinGAN's BRE: bit balance (mean of batch-mean^2) + decorrelation (mean squared
    off-diagonal of u^T u / N)."""
    u = u.float()
    k = u.shape[1]
    c = u.T @ u / u.shape[0]
    off = c - torch.diag(torch.diag(c))
    return u.mean(0).pow(2).mean() + off.pow(2).sum() / (k * (k - 1))


def dmr(f, u):
    """BinGAN's DMR: mean over pairs i != j of (u_i.u_j / K - cos(f_i - mean, f_j - mean))^2."""
    f = F.normalize(f.float() - f.float().mean(0), dim=1)
    u = u.float()
    diff = (u @ u.T / u.shape[1] - f @ f.T).pow(2)
    n = u.shape[0]
    return (diff.sum() - diff.diagonal().sum()) / (n * (n - 1))


def code_losses(cfg, heads, n_pairs, f=None):
    """Sum over code heads of contrast * NT-Xent(view1, view2) + bre * BRE (+ dmr * DMR on
    view 1, with f its pooled features). heads: raw head outputs for [view1; view2]."""
    total = 0.0
    for h in heads:
        u = torch.tanh(h.float())
        b = u + (torch.sign(u) - u).detach() if cfg["code"] == "st" else u
        if cfg["contrast"]:
            total = total + cfg["contrast"] * nt_xent(b[:n_pairs], b[n_pairs:], cfg["temperature"])
        if cfg["bre"]:
            total = total + cfg["bre"] * bre(u)
        if cfg["dmr"] and f is not None:
            total = total + cfg["dmr"] * dmr(f[:n_pairs], u[:n_pairs])
    return total


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(net, images, labels, train_count, queries, database, device, amp):
    """{K: (map sign-at-0, map median-centred, bit balance)} for each head."""
    net.eval()
    outs = []
    for start in range(0, len(images), 4096):
        x = images[start:start + 4096].to(device, non_blocking=True).float().div_(255)
        with torch.autocast("cuda", torch.bfloat16, enabled=amp):
            _, heads, _ = net(x.unsqueeze(1).contiguous(memory_format=torch.channels_last))
        outs.append([h.float() for h in heads])
    net.train()
    result = {}
    for i in range(len(outs[0])):
        h = torch.cat([o[i] for o in outs])
        sign_bits = h >= 0
        median_bits = h >= h[:train_count].median(0).values
        result[h.shape[1]] = (map_at_top(sign_bits, labels, queries, database),
                              map_at_top(median_bits, labels, queries, database),
                              float((sign_bits[database].float().mean(0) - 0.5).abs().mean()))
    return result


# ----------------------------------------------------------------------------- training

def run_variant(name, cfg, args, data, deadline, emit):
    torch.manual_seed(0)
    np.random.seed(0)
    device, amp = data["device"], data["device"].type == "cuda"
    train = data["train"]  # float [N, 1, 32, 32] on device
    n_train, batch = len(train), cfg["batch"]
    steps_per_epoch = n_train // batch
    net = HashNet(cfg, args.bits).to(device).to(memory_format=torch.channels_last)
    opt_d = torch.optim.Adam(net.parameters(), cfg["lr"], betas=(cfg["beta1"], 0.999),
                             weight_decay=cfg["weight_decay"])
    gen = opt_g = None
    if cfg["gan"]:
        gen = Generator(cfg["latent"]).to(device).to(memory_format=torch.channels_last)
        opt_g = torch.optim.Adam(gen.parameters(), cfg["g_lr"], betas=(cfg["beta1"], 0.999))
    d_step, g_step = net, gen
    if args.compile and device.type == "cuda":
        d_step, g_step = torch.compile(net), (torch.compile(gen) if gen else None)
    frozen = FrozenBNStats(net)
    planned = args.epochs
    start, step, eval_seconds, epoch_seconds = time.time(), 0, 0.0, []
    losses = {}

    def lr_scale():
        return 0.5 * (1 + math.cos(math.pi * min(step / (planned * steps_per_epoch), 1.0)))

    epoch, last_eval = 0, [None]

    def do_eval():
        t_eval = time.time()
        scores = evaluate(net, data["eval_images"], data["labels"], data["eval_train"],
                          data["queries"], data["database"], device, amp)
        for k, (m, m_med, balance) in scores.items():
            emit({"variant": name, "bits": k, "epoch": epoch, "epochs_planned": planned,
                  "map": round(m, 4), "map_median": round(m_med, 4),
                  "bit_balance": round(balance, 4), "seconds": round(time.time() - start, 1),
                  "seconds_per_epoch": round(epoch_seconds[-1], 2), "losses": losses,
                  "config": cfg})
        last_eval[0] = epoch
        return time.time() - t_eval

    while epoch < planned:
        # Stop if another epoch plus a final evaluation would pass the deadline.
        estimate = (max(epoch_seconds[-2:]) if epoch_seconds else 0) + max(eval_seconds, 1.0)
        if epoch_seconds and time.time() + estimate > deadline:
            break
        t_epoch = time.time()
        order = torch.randperm(n_train, device=device)
        sums = {}
        for i in range(steps_per_epoch):
            for opt, base in ((opt_d, cfg["lr"]), (opt_g, cfg["g_lr"])):
                if opt is not None:
                    for group in opt.param_groups:
                        group["lr"] = base * lr_scale()
            x = train[order[i * batch:(i + 1) * batch]]
            views = torch.cat([augment(x, cfg), augment(x, cfg)])
            views = views.contiguous(memory_format=torch.channels_last)
            if cfg["gan"]:
                z = torch.randn(batch, cfg["latent"], device=device)
                with torch.autocast("cuda", torch.bfloat16, enabled=amp):
                    fake = g_step(z).float()
                fake_aug = augment(fake.detach(), cfg).contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", torch.bfloat16, enabled=amp):
                    f_real, heads, logit_real = d_step(views)
                    with frozen:
                        _, _, logit_fake = d_step(fake_aug)
                gan = F.softplus(-logit_real.float()).mean() + F.softplus(logit_fake.float()).mean()
                codes = code_losses(cfg, heads, batch, f_real)
                loss_d = gan + codes
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                fake_aug = augment(fake, cfg).contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", torch.bfloat16, enabled=amp), frozen:
                    f_fake, _, logit_fake = d_step(fake_aug)
                fm = (f_real.detach().float().mean(0) - f_fake.float().mean(0)).pow(2).mean()
                loss_g = 0.0
                if "fm" in cfg["g_loss"]:
                    loss_g = loss_g + fm
                if "ns" in cfg["g_loss"]:
                    loss_g = loss_g + F.softplus(-logit_fake.float()).mean()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                parts = {"d_gan": gan, "codes": codes, "fm": fm}
            else:
                with torch.autocast("cuda", torch.bfloat16, enabled=amp):
                    _, heads, _ = d_step(views)
                codes = code_losses(cfg, heads, batch)
                opt_d.zero_grad(set_to_none=True)
                codes.backward()
                opt_d.step()
                parts = {"codes": codes}
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value.detach()
            step += 1
        losses = {key: round(float(value) / steps_per_epoch, 5) for key, value in sums.items()}
        epoch += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds.append(time.time() - t_epoch)
        if epoch == 1 and epoch < planned:  # also times an evaluation for the planning below
            eval_seconds = do_eval()
        if epoch <= 3 and epoch < planned:  # fit the cosine schedule to this variant's share
            per_epoch = max(epoch_seconds[-2:])
            room = deadline - time.time() - 1.5 * eval_seconds  # final evaluation
            fit = epoch + int(room // (per_epoch + 1.2 * eval_seconds / args.eval_every))
            new_planned = max(epoch + 1, min(args.epochs, fit))
            if new_planned != planned:
                print(f"# {name}: {per_epoch:.1f}s/epoch, schedule {planned} -> {new_planned} "
                      f"epochs to fit the budget", flush=True)
                planned = new_planned
        if (epoch % args.eval_every == 0 or epoch == planned) and last_eval[0] != epoch:
            eval_seconds = do_eval()
    if epoch and last_eval[0] != epoch:  # stopped early by the deadline
        do_eval()
    if args.save:
        torch.save({"net": net.state_dict(), "config": cfg},
                   os.path.join(args.out, f"{name}.pt"))


def parse_set(pairs):
    changes = {}
    for pair in pairs or ():
        key, value = pair.split("=", 1)
        if key not in BASE:
            raise SystemExit(f"--set: unknown field {key!r}; fields: {sorted(BASE)}")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    return changes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with the four idx files (gz or not)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default="contrastive,bingan_plus",
                        help=f"comma-separated, of {sorted(VARIANTS)}; empty = PCA-ITQ only")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--bits", default="16,32,64")
    parser.add_argument("--aug", choices=("mild", "aggressive"),
                        help="augmentation strength for variants that do not fix it")
    parser.add_argument("--budget-seconds", type=float, default=480)
    parser.add_argument("--limit", type=int, help="train on the first N images; reduced "
                        "protocol (200 queries against 4,000) -- for smoke tests")
    parser.add_argument("--set", action="append", dest="changes", metavar="FIELD=VALUE",
                        help="override a config field for all variants (repeatable)")
    parser.add_argument("--compile", action="store_true", help="torch.compile on CUDA")
    parser.add_argument("--save", action="store_true", help="save each variant's weights")
    parser.add_argument("--no-itq", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads (smoke tests)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    deadline_all = t0 + args.budget_seconds - 5
    args.bits = tuple(int(b) for b in args.bits.split(","))
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; known: {sorted(VARIANTS)}")
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    np.random.seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    images, labels = load_fashion(args.data)
    train_count = 60000
    if args.limit:
        images, labels = images[:4200], labels[:4200]
        train_count = min(args.limit, 4200)
        queries, database = split_queries(len(images), 200)
        train_np = load_fashion(args.data)[0][:args.limit] if args.limit > 4200 else images[:args.limit]
    else:
        queries, database = split_queries(len(images), 1000)
        train_np = images[:60000]
    results = open(os.path.join(args.out, "results.jsonl"), "a")

    def emit(record):
        line = json.dumps(record)
        print(line, flush=True)
        results.write(line + "\n")
        results.flush()
        os.fsync(results.fileno())

    print(f"# device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'})"
          f", torch {torch.__version__}, {len(train_np)} training images, protocol "
          f"{len(queries)} queries x {len(database)} database", flush=True)
    data = {"device": device, "labels": torch.as_tensor(labels, device=device),
            "queries": torch.as_tensor(queries, device=device),
            "database": torch.as_tensor(database, device=device),
            "eval_images": torch.as_tensor(images), "eval_train": min(train_count, len(images)),
            "train": torch.as_tensor(train_np, device=device).float().div_(255).unsqueeze(1)}
    if device.type == "cuda":
        data["eval_images"] = data["eval_images"].to(device)
    if not args.no_itq:
        t_itq = time.time()
        for k, bits in itq_bits(images[database], images, args.bits).items():
            score = map_at_top(torch.as_tensor(bits, device=device), data["labels"],
                               data["queries"], data["database"])
            emit({"variant": "pca_itq_pixels", "bits": k, "epoch": 0, "map": round(score, 4),
                  "seconds": round(time.time() - t_itq, 1), "config": {}})
    for i, name in enumerate(variants):
        share = (deadline_all - time.time()) / (len(variants) - i)
        if share < 5:
            print(f"# skipping {name}: budget spent", flush=True)
            continue
        cfg = dict(BASE, **({"aug": args.aug} if args.aug else {}), **VARIANTS[name],
                   **parse_set(args.changes))
        print(f"# {name}: {share:.0f}s share, config {json.dumps(cfg)}", flush=True)
        run_variant(name, cfg, args, data, time.time() + share, emit)
    results.close()
    print(f"# done in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
