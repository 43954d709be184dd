"""The networks of a training run, their optimisers and schedulers, the reference CycleGAN step and the paired step,
the image pool, and the full state for checkpoints (see :mod:`.train` for the method)."""

from __future__ import annotations

import json
import random

import numpy as np
import torch
from torch import nn

from .nets import build_discriminator, build_generator, init_weights
from .train_config import TrainConfig, TrainingError
from .train_consistency import FrameNoise, consistency_loss


def blind_spots(x: torch.Tensor, fraction: float, span: int) -> tuple[torch.Tensor, tuple]:
    """The input of a structured Noise2Void step and the blind spots' indices.

    A random ``fraction`` of pixels become blind spots: each takes the value of a random pixel
    within 2 px in another row (the same row shares scan noise along the fast axis), and its
    ``span`` neighbours on each side along x take the values of random pixels of the crop, so
    neither the pixel nor noise correlated with it along the scan line reaches the network.
    """
    with torch.no_grad():
        n, _, h, w = x.shape
        spots = (torch.rand(n, 1, h, w, device=x.device) < fraction).nonzero(as_tuple=True)
        k = spots[0].numel()
        x_in = x.clone()
        if k == 0:
            return x_in, spots
        dy = torch.randint(1, 3, (k,), device=x.device) * (torch.randint(0, 2, (k,), device=x.device) * 2 - 1)
        dx = torch.randint(-2, 3, (k,), device=x.device)
        rows = (spots[2] + dy).clamp(0, h - 1)
        rows = torch.where(rows == spots[2], spots[2] - dy, rows)  # clamped back onto the spot's row at an edge
        cols = (spots[3] + dx).clamp(0, w - 1)
        x_in[spots] = x[spots[0], spots[1], rows, cols]
        flat = x.reshape(n, -1)
        for offset in [o for s in range(1, span + 1) for o in (-s, s)]:
            c = spots[3] + offset
            ok = (c >= 0) & (c < w)
            b = spots[0][ok]
            # a random pixel of the same crop: the data's own distribution, unrelated to the blind spot's scan line
            pick = torch.randint(0, h * w, (int(ok.sum()),), device=x.device)
            x_in[b, spots[1][ok], spots[2][ok], c[ok]] = flat[b, pick]
    return x_in, spots


def _load_bundled(net: nn.Module, cfg, bundled) -> None:
    """Start ``net`` from the weights of ``bundled`` (the bundled Denoiser); its architecture must be the bundled one."""
    if bundled.info.config != cfg:
        c = bundled.info.config
        raise TrainingError(f"fine-tuning the bundled model keeps its architecture ({c.netG}, ngf {c.ngf}, final {c.final}, "
                            f"residual {c.residual}): use the 'default' model preset without changing the generator "
                            "(--ngf, --final, --residual), or start from random weights (init 'scratch', --init scratch)")
    net.load_state_dict(bundled.net.state_dict())

class ImagePool:
    """The reference's history of generated images: once full, a stored image is returned
    (and replaced by the new one) with probability 0.5."""

    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif rng.random() > 0.5:
                k = int(rng.integers(self.size))
                out.append(self.images[k].clone())
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)


class _Model:
    def __init__(self, cfg: TrainConfig, device: torch.device, bundled=None):
        """``bundled``: the bundled Denoiser, which G_A starts from when ``cfg.init`` is "bundled"."""
        self.cfg = cfg
        self.device = device
        g = cfg.generator
        self.nets: dict[str, nn.Module] = {"G_A": init_weights(build_generator(g), seed=cfg.seed)}
        if cfg.init == "bundled":
            _load_bundled(self.nets["G_A"], g, bundled)
        if cfg.mode == "cyclegan":
            self.nets["G_B"] = init_weights(build_generator(g), seed=cfg.seed + 1)
        if cfg.mode == "cyclegan" or cfg.lambda_adv_paired > 0:
            self.nets["D_A"] = init_weights(build_discriminator(g.output_nc, cfg.ndf, cfg.n_layers_d, g.norm), seed=cfg.seed + 2)
        if cfg.mode == "cyclegan":
            self.nets["D_B"] = init_weights(build_discriminator(g.input_nc, cfg.ndf, cfg.n_layers_d, g.norm), seed=cfg.seed + 3)
        for net in self.nets.values():
            net.to(device).train()
        gens = [p for k, n in self.nets.items() if k.startswith("G") for p in n.parameters()]
        discs = [p for k, n in self.nets.items() if k.startswith("D") for p in n.parameters()]
        betas = (cfg.beta1, 0.999)
        self.opt = {"G": torch.optim.Adam(gens, lr=cfg.lr, betas=betas)}
        if discs:
            self.opt["D"] = torch.optim.Adam(discs, lr=cfg.lr, betas=betas)
        keep = int(cfg.iterations * cfg.decay_from)
        rule = lambda it: 1.0 - max(0, it - keep) / float(cfg.iterations - keep + 1)  # noqa: E731 - the reference's rule
        self.sched = {k: torch.optim.lr_scheduler.LambdaLR(o, rule) for k, o in self.opt.items()}
        self.pools = {"A": ImagePool(cfg.pool_size), "B": ImagePool(cfg.pool_size)}

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    @staticmethod
    def _requires_grad(nets, flag: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad = flag

    @staticmethod
    def _gan(pred: torch.Tensor, real: bool) -> torch.Tensor:
        return nn.functional.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))

    def step(self, batch, rng: np.random.Generator, noises: list[FrameNoise] | None = None) -> dict:
        """One iteration; ``noises`` (each noisy crop's frame noise model) switch the consistency term on."""
        step = {"cyclegan": self._cycle, "paired": self._paired, "n2v": self._n2v}[self.cfg.mode]
        return step(*batch, rng, noises)

    def _n2v(self, x: torch.Tensor, rng, noises=None) -> dict:
        """Self-supervised: predict each blind spot from what surrounds it (MSE to its noisy value)."""
        x_in, spots = blind_spots(x, self.cfg.n2v_fraction, self.cfg.n2v_span)
        self.opt["G"].zero_grad(set_to_none=True)
        with self._autocast():
            out = self.nets["G_A"](x_in)
            mse = nn.functional.mse_loss(out[spots].float(), x[spots].float()) if spots[0].numel() else out.sum() * 0
        # the consistency of what a user gets, the output of the whole crop: on the blind-spot input it would ask the
        # network to reproduce the masked pixels
        cons = self._consistency(x, self.nets["G_A"](x), noises) if noises else self._consistency(x, out, None)
        (mse + cons).backward()
        self.opt["G"].step()
        losses = {"N2V": float(mse.detach())}
        if noises:
            losses["consistency"] = float(cons.detach())
        return losses

    def _consistency(self, x: torch.Tensor, out: torch.Tensor, noises) -> torch.Tensor:
        if not noises or self.cfg.lambda_consistency <= 0:
            return torch.zeros((), device=self.device)
        return consistency_loss(x, out, noises, self.cfg.consistency_margin) * self.cfg.lambda_consistency

    def _cycle(self, real_a: torch.Tensor, real_b: torch.Tensor, rng, noises=None) -> dict:
        c, n = self.cfg, self.nets
        lam, lam_idt = c.lambda_cycle, c.lambda_cycle * c.lambda_identity
        # generators, with the discriminators frozen
        self._requires_grad([n["D_A"], n["D_B"]], False)
        self.opt["G"].zero_grad(set_to_none=True)
        l1 = nn.functional.l1_loss
        with self._autocast():
            fake_b = n["G_A"](real_a)
            rec_a = n["G_B"](fake_b)
            fake_a = n["G_B"](real_b)
            rec_b = n["G_A"](fake_a)
            idt_a = l1(n["G_A"](real_b), real_b) * lam_idt if lam_idt > 0 else torch.zeros((), device=self.device)
            idt_b = l1(n["G_B"](real_a), real_a) * lam_idt if lam_idt > 0 else torch.zeros((), device=self.device)
            g_a = self._gan(n["D_A"](fake_b), True)
            g_b = self._gan(n["D_B"](fake_a), True)
            cyc_a = l1(rec_a, real_a) * lam
            cyc_b = l1(rec_b, real_b) * lam
        cons = self._consistency(real_a, fake_b, noises)
        (g_a + g_b + cyc_a + cyc_b + idt_a + idt_b + cons).backward()
        self.opt["G"].step()
        # discriminators, each loss halved, fakes from the pools
        self._requires_grad([n["D_A"], n["D_B"]], True)
        self.opt["D"].zero_grad(set_to_none=True)
        pool_b = self.pools["B"].query(fake_b.float(), rng)
        with self._autocast():
            d_a = (self._gan(n["D_A"](real_b), True) + self._gan(n["D_A"](pool_b.detach()), False)) * 0.5
        d_a.backward()
        pool_a = self.pools["A"].query(fake_a.float(), rng)
        with self._autocast():
            d_b = (self._gan(n["D_B"](real_a), True) + self._gan(n["D_B"](pool_a.detach()), False)) * 0.5
        d_b.backward()
        self.opt["D"].step()
        out = dict(D_A=d_a, G_A=g_a, cycle_A=cyc_a, idt_A=idt_a, D_B=d_b, G_B=g_b, cycle_B=cyc_b, idt_B=idt_b)
        if noises:
            out["consistency"] = cons
        return {k: float(v.detach()) for k, v in out.items()}

    def _paired(self, x: torch.Tensor, y: torch.Tensor, rng, noises=None) -> dict:
        c, n = self.cfg, self.nets
        adv = "D_A" in n
        if adv:
            self._requires_grad([n["D_A"]], False)
        self.opt["G"].zero_grad(set_to_none=True)
        with self._autocast():
            fake = n["G_A"](x)
            l1 = nn.functional.l1_loss(fake, y)
            loss = l1 + (c.lambda_adv_paired * self._gan(n["D_A"](fake), True) if adv else 0.0)
        cons = self._consistency(x, fake, noises)
        (loss + cons).backward()
        self.opt["G"].step()
        out = {"L1": float(l1.detach())}
        if noises:
            out["consistency"] = float(cons.detach())
        if adv:
            self._requires_grad([n["D_A"]], True)
            self.opt["D"].zero_grad(set_to_none=True)
            with self._autocast():
                d = (self._gan(n["D_A"](y), True) + self._gan(n["D_A"](fake.detach()), False)) * 0.5
            d.backward()
            self.opt["D"].step()
            out["D_A"] = float(d.detach())
        return out

    def lr(self) -> float:
        return self.sched["G"].get_last_lr()[0]

    def step_schedulers(self) -> None:
        for s in self.sched.values():
            s.step()

    # ---------------------------------------------------------------- state
    def state(self, iteration: int, rng: np.random.Generator) -> dict:
        return {
            "iteration": iteration,
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "opt": {k: v.state_dict() for k, v in self.opt.items()},
            "sched": {k: v.state_dict() for k, v in self.sched.items()},
            "pools": {k: [t.cpu() for t in p.images] for k, p in self.pools.items()},
            "rng_numpy": json.dumps(rng.bit_generator.state),
            "rng_torch": torch.get_rng_state(),
            "rng_python": json.dumps(random.getstate()),
        }

    def load_state(self, state: dict, rng: np.random.Generator) -> int:
        for k, v in state["nets"].items():
            self.nets[k].load_state_dict(v)
        for k, v in state["opt"].items():
            self.opt[k].load_state_dict(v)
        for k, v in state["sched"].items():
            self.sched[k].load_state_dict(v)
        for k, v in state["pools"].items():
            self.pools[k].images = [t.to(self.device) for t in v]
        rng.bit_generator.state = json.loads(state["rng_numpy"])
        torch.set_rng_state(state["rng_torch"])
        st = json.loads(state["rng_python"])
        random.setstate((st[0], tuple(st[1]), st[2]))
        return int(state["iteration"])
