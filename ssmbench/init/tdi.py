"""TDI: task-dependent initialization by power-spectrum matching (Chen & Chen 2025; docs/methods.md §C).

1. Task spectrum (Definition 2). From S <= `init.samples` training pairs, the cross-covariance
   Sigma_xy = (X - xbar)^T (Y - ybar) / (S - 1) in R^{L x d} (Y one-hot for classification), and
   P_task(k) = (1/d) sum_i |FFT_L(Sigma_xy[:, i])_k|  (or |.|^2 with `task_power: squared`), one-sided bins
   k = 0..L/2. Inputs: the raw sequence when the data has one real channel; otherwise (tokens, several channels)
   the encoder output u = enc(x) in R^{S x L x H} at initialization, averaging the spectra over H as well
   (for d_in = 1 both routes give the same normalized spectrum, docs/methods.md §C "Multi-dimensional inputs").
2. Model spectrum. One S4D channel with B = 1, no D: P_model(k) = |rfft(K, L)_k|^2 with
   K_l = 2 Re sum_n C_n B_bar_n A_bar_n^l (ZOH by default), A = -exp(a_re) + i A_im, dt = exp(log_dt),
   evaluated by the closed-form geometric sum (tests hold it to the materialized kernel).
3. Theorem F.1 init: the M bins k_1..k_M with the largest P_task; Im A_{h,n} = 2 pi k_n / (L dt_h),
   Re A = -1/2, C ~ CN(0, 1), dt log-uniform on [dt_min, dt_max] (M = stored complex modes = d_state / 2).
4. Algorithm 1: minimize L_PSM = mean_h sum_k (P_model/||P_model|| - P_task/||P_task||)^2 (= 2 - 2 cos) over
   (a_re, A_im, C, log_dt) with full-batch Adam and cosine annealing to 0.

5. DSS, S5, LRU (modes shared by the channels; docs/methods.md §I.6): F.1 placement only. The M stored modes get
   the top-M bins of the same task spectrum, omega_n = 2 pi k_n / L radians per step, through each layer's
   `place_frequencies` (DSS: Im Lambda_n = omega_n / dt_ref with one dt_im = sqrt(dt_min dt_max) for all channels;
   S5: Im Lambda_p = omega_p / dt_p; LRU: theta_n = omega_n); everything else keeps the layer's own init.
   Algorithm 1 stays S4D's (it fits H independent SISO channels); no artifact is written for these layers.

`ssmbench init-tdi` (command in ssmbench/init_tdi.py) writes the result as an artifact: `<stem>.pt` (tensors,
loadable with weights_only=True), `<stem>.json` (metadata and spectra) and `<stem>.png` (task vs model spectrum
before/after). A recipe with `init: {name: tdi}` copies it into the first SSM layer (computing and caching it when
missing); the other layers use `init.base`. TDI runs last in `apply_init`, so it replaces the first layer's A,
B (= 1), C and dt after alpha and zero real part (a zero-real channel keeps its raw real part, now starting at the
matched Re(A)).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from ssmbench import runs, safe_read
from ssmbench.errors import CheckpointError, SSMBenchError
from ssmbench.init.hippo import s4d_lin
from ssmbench.init.zero_real import training_batches
from ssmbench.models.kernels import discretize
from ssmbench.registry import INITIALIZERS

ARTIFACT_VERSION = 1


@INITIALIZERS.register("tdi")
def tdi_base(N: int):
    """The layers are built with S4D-Lin; `apply_init` then applies `init.base` and TDI on the first layer."""
    return s4d_lin(N)


# --------------------------------------------------------------------------------------------------
# Spectra and loss


def cross_covariance(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Sigma_xy per input channel, (c, L, d), float64, streamed: (sum x y^T - S xbar ybar^T) / (S - 1).

    Each batch: x (b, L, c) features, y (b, d) targets.
    """
    S, sx, sy, sxy = 0, 0.0, 0.0, 0.0
    for x, y in batches:
        x, y = x.double(), y.double()
        sx = sx + x.sum(0)
        sy = sy + y.sum(0)
        sxy = sxy + torch.einsum("blc,bd->cld", x, y)
        S += len(x)
    if S < 2:
        raise SSMBenchError(f"tdi: the task spectrum needs at least 2 training samples, got {S}")
    return (sxy - torch.einsum("lc,d->cld", sx, sy) / S) / (S - 1)


def task_spectrum(sigma_xy: torch.Tensor, power: str = "magnitude") -> torch.Tensor:
    """P_task on the one-sided bins (L//2 + 1,): the mean over channels and targets of |FFT_L(Sigma_xy)|^p."""
    mag = torch.fft.rfft(sigma_xy, dim=1).abs()
    return (mag if power == "magnitude" else mag ** 2).mean(dim=(0, 2))


def model_spectrum(a_re: torch.Tensor, A_im: torch.Tensor, C: torch.Tensor, log_dt: torch.Tensor, L: int,
                   discretization: str = "zoh") -> torch.Tensor:
    """P_model (H, L//2 + 1) = |rfft(K, L)|^2 of SISO S4D channels with B = 1 and no D, in closed form.

    With W = C * B_bar, lambda = A_bar and z_k = exp(-2 pi i k / L) (so z_k^L = 1), the geometric sum gives
    rfft(K, L)_k = sum_n [W_n (1 - lambda_n^L) / (1 - lambda_n z_k) + conj(W_n) (1 - conj(lambda_n)^L) / (1 - conj(lambda_n) z_k)]
    (docs/methods.md §C "Closed form"): (H, M, L/2+1) divisions instead of the (H, M, L) Vandermonde exponentials.
    Well conditioned because |lambda| < 1 here (Re A = -exp(a_re) < 0).
    """
    A = torch.complex(-torch.exp(a_re), A_im)
    log_A_bar, B_bar = discretize(A, torch.ones_like(A), torch.exp(log_dt), discretization)
    W, lam = C * B_bar, torch.exp(log_A_bar)
    k = torch.arange(L // 2 + 1, device=a_re.device, dtype=a_re.dtype)
    z = torch.polar(torch.ones_like(k), -2 * math.pi * k / L)
    tail = 1 - torch.exp(L * log_A_bar)
    H_k = ((W * tail)[..., None] / (1 - lam[..., None] * z)).sum(1) \
        + ((W * tail).conj()[..., None] / (1 - lam.conj()[..., None] * z)).sum(1)
    return H_k.abs() ** 2


def normalize(P: torch.Tensor, how: str = "l2") -> torch.Tensor:
    """P / ||P||_2 (default) or P / sum(P), along the last axis."""
    scale = P.norm(dim=-1, keepdim=True) if how == "l2" else P.sum(dim=-1, keepdim=True)
    return P / scale.clamp_min(torch.finfo(P.dtype).tiny)


def psm_loss(P_model: torch.Tensor, P_task: torch.Tensor, how: str = "l2") -> torch.Tensor:
    """L_PSM = mean over channels of sum_k (P^_model,k - P^_task,k)^2 (Eq. 4)."""
    return ((normalize(P_model, how) - normalize(P_task, how)) ** 2).sum(-1).mean()


def top_bins(P_task: torch.Tensor, M: int) -> torch.Tensor:
    """The M distinct bins with the largest P_task, ascending."""
    if M > P_task.numel():
        raise SSMBenchError(f"tdi: {M} modes need at least {M} frequency bins, but L = {2 * (P_task.numel() - 1)} "
                            f"gives {P_task.numel()}; use a smaller model.ssm.d_state")
    return torch.argsort(P_task, descending=True, stable=True)[:M].sort().values


def f1_imag(bins: torch.Tensor, log_dt: torch.Tensor, L: int) -> torch.Tensor:
    """Theorem F.1: Im A_{h,n} = 2 pi k_n / (L dt_h), so mode n of every channel peaks at bin k_n."""
    return 2 * math.pi * bins.to(log_dt.dtype)[None, :] / (L * torch.exp(log_dt)[:, None])


# --------------------------------------------------------------------------------------------------
# Algorithm 1


@dataclass
class TDIResult:
    A: torch.Tensor  # (H, M) complex128
    C: torch.Tensor  # (H, M) complex128
    log_dt: torch.Tensor  # (H,) float64
    task_spectrum: torch.Tensor  # (K,) normalized
    model_spectrum_before: torch.Tensor  # (K,) channel mean of the normalized model spectra at the F.1 init
    model_spectrum_after: torch.Tensor  # (K,) the same after Algorithm 1
    loss_before: float
    loss_after: float
    seconds: float


def match(P_task: torch.Tensor, L: int, H: int, M: int, steps: int = 2000, lr: float = 1e-2,
          dt_min: float = 1e-3, dt_max: float = 1e-1, seed: int = 0, normalization: str = "l2",
          discretization: str = "zoh", dtype: torch.dtype = torch.float32,
          on_step: Callable[[int, float], None] | None = None) -> TDIResult:
    """F.1 init, then Algorithm 1 (Adam + CosineAnnealingLR(T_max=steps, eta_min=0), full batch)."""
    tick = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    log_dt = torch.rand(H, generator=g, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    C = torch.randn(H, M, generator=g, dtype=torch.complex128)
    A_im = f1_imag(top_bins(P_task, M), log_dt, L)
    a_re = torch.full((H, M), math.log(0.5), dtype=torch.float64)
    params = [p.to(dtype).requires_grad_() for p in (a_re, A_im, torch.view_as_real(C), log_dt)]
    target = P_task.to(dtype)

    def loss_and_spectrum():
        a, im, c, ldt = params
        P = model_spectrum(a, im, torch.view_as_complex(c), ldt, L, discretization)
        return psm_loss(P, target, normalization), normalize(P, normalization).mean(0)

    with torch.enable_grad():
        loss, before = loss_and_spectrum()
        loss_before = float(loss.detach())
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=0.0)
        for step in range(steps):
            opt.zero_grad()
            loss, _ = loss_and_spectrum()
            loss.backward()
            opt.step()
            sched.step()
            if on_step:
                on_step(step + 1, float(loss.detach()))
        with torch.no_grad():
            loss, after = loss_and_spectrum()
    a, im, c, ldt = (p.detach().double() for p in params)
    return TDIResult(A=torch.complex(-torch.exp(a), im), C=torch.view_as_complex(c.contiguous()), log_dt=ldt,
                     task_spectrum=normalize(P_task.double(), normalization), model_spectrum_before=before.detach().double(),
                     model_spectrum_after=after.detach().double(), loss_before=loss_before, loss_after=float(loss),
                     seconds=time.perf_counter() - tick)


# --------------------------------------------------------------------------------------------------
# From a dataset to a result


def uses_encoder(data) -> bool:
    """Raw x for one real input channel; the encoder output otherwise (docs/methods.md §C "Multi-dimensional inputs")."""
    return not (data.io.input_kind == "real" and data.io.d_input == 1)


def feature_batches(data, encoder: torch.nn.Module | None, samples: int, seed: int):
    """(features (b, L, c), targets (b, d)) over at most `samples` training pairs; one-hot targets for classes."""
    route = uses_encoder(data)
    for x, y in training_batches(data.train, samples, seed):
        if route:
            with torch.no_grad():
                feats = encoder(x.to(next(encoder.parameters()).device)).detach().cpu()
        else:
            feats = x.reshape(len(x), data.seq_len, 1)
        if data.task == "classification":
            y = F.one_hot(y.long(), data.io.n_outputs)
        yield feats, y.reshape(len(y), -1)


def compute(recipe, data, encoder: torch.nn.Module | None, H: int, M: int,
            on_step: Callable[[int, float], None] | None = None) -> tuple[TDIResult, dict]:
    """Task spectrum of the recipe's training data, then `match`; returns the result and its metadata."""
    cfg, ssm = recipe.init, recipe.model.ssm
    n = min(cfg.samples, len(data.train))
    sigma = cross_covariance(feature_batches(data, encoder, cfg.samples, recipe.data.split_seed))
    P_task = task_spectrum(sigma, cfg.tdi.task_power)
    L = data.seq_len
    result = match(P_task, L, H, M, steps=cfg.tdi.steps, lr=cfg.tdi.lr, dt_min=ssm.dt_min, dt_max=ssm.dt_max,
                   seed=recipe.seed, normalization=cfg.tdi.normalization, discretization=ssm.discretization,
                   on_step=on_step)
    meta = {"version": ARTIFACT_VERSION, "dataset": recipe.data.name, "data_options": recipe.data.options,
            "data_source": data.source, **cache_key(recipe)["tdi"], "max_samples": cfg.samples, "samples": n,
            "L": L, "H": H, "M": M, "route": "encoder" if uses_encoder(data) else "raw",
            "loss_before": result.loss_before, "loss_after": result.loss_after, "seconds": round(result.seconds, 3),
            "peak_bin_task": int(result.task_spectrum.argmax()),
            "peak_bin_before": int(result.model_spectrum_before.argmax()),
            "peak_bin_after": int(result.model_spectrum_after.argmax()),
            "task_spectrum": result.task_spectrum.tolist(),
            "model_spectrum_before": result.model_spectrum_before.tolist(),
            "model_spectrum_after": result.model_spectrum_after.tolist()}
    return result, meta


# --------------------------------------------------------------------------------------------------
# Artifacts


def cache_key(recipe) -> dict:
    """Everything the artifact depends on."""
    d, m, i = recipe.data, recipe.model, recipe.init
    return {"dataset": d.name, "data_options": d.options, "val_fraction": d.val_fraction,
            "train_fraction": d.train_fraction, "split_seed": d.split_seed, "seed": recipe.seed,
            "d_model": m.d_model, "d_state": m.ssm.d_state, "tdi": {
                "samples": i.samples, "steps": i.tdi.steps, "lr": i.tdi.lr, "normalization": i.tdi.normalization,
                "task_power": i.tdi.task_power, "dt_min": m.ssm.dt_min, "dt_max": m.ssm.dt_max,
                "discretization": m.ssm.discretization}}


def default_path(recipe) -> Path:
    """<data.root>/cache/tdi/<dataset>-<hash of the cache key>.pt"""
    digest = hashlib.sha256(json.dumps(cache_key(recipe), sort_keys=True).encode()).hexdigest()[:12]
    return Path(recipe.data.root) / "cache" / "tdi" / f"{recipe.data.name}-{digest}.pt"


def artifact_files(path: Path) -> list[Path]:
    """The three files of an artifact: <stem>.pt, .json and .png."""
    path = Path(path)
    return [path, path.with_suffix(".json"), path.with_suffix(".png")]


def prepare_target(path: Path) -> None:
    """Make sure an artifact can be written at `path` before any work is spent on it: its folder exists (or is
    created) and none of its three files exists unless ssmbench wrote it (i.e. its .json holds TDI metadata), so
    an artifact never replaces a file of the user's. Failures raise SSMBenchError naming the file."""
    files = artifact_files(path)
    existing = [f for f in files if f.exists() or f.is_symlink()]
    if existing:
        try:
            ours = {"task_spectrum", "loss_after", "M"} <= set(json.loads(safe_read.read_bytes(files[1], "record")))
        except (OSError, ValueError, TypeError, safe_read.FileRefused):
            ours = False
        if not ours:
            raise SSMBenchError(f"{existing[0]}: exists and is not part of a TDI artifact written by ssmbench (no TDI "
                                f"metadata in {files[1]}); move it away or choose another artifact path")
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SSMBenchError(f"{path}: cannot create its folder ({e.strerror or e}); choose a writable artifact path") from None


def save_artifact(path: Path, result: TDIResult, meta: dict) -> list[Path]:
    """Write <path>.pt, .json and .png atomically (after `prepare_target`); return the three paths."""
    path = Path(path)
    prepare_target(path)
    buf = io.BytesIO()
    torch.save({"A": torch.view_as_real(result.A), "C": torch.view_as_real(result.C), "log_dt": result.log_dt}, buf)
    try:
        runs.atomic_write_bytes(path, buf.getvalue())
        runs.atomic_write_json(path.with_suffix(".json"), meta)
        plot_spectra(meta, path.with_suffix(".png"))
    except OSError as e:
        raise SSMBenchError(f"{path}: cannot write the TDI artifact ({e.strerror or e})") from None
    return artifact_files(path)


def load_artifact(path: Path) -> tuple[dict, dict]:
    """(tensors {A, C complex (H, M), log_dt (H,)}, metadata); unreadable files raise CheckpointError."""
    path = Path(path)
    try:  # under the reading rule of ssmbench/safe_read.py (regular files under the size caps)
        raw = torch.load(io.BytesIO(safe_read.read_bytes(path, "checkpoint")), map_location="cpu", weights_only=True)
        meta = json.loads(safe_read.read_bytes(path.with_suffix(".json"), "record"))
        tensors = {"A": torch.view_as_complex(raw["A"]), "C": torch.view_as_complex(raw["C"]), "log_dt": raw["log_dt"]}
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, EOFError, pickle.UnpicklingError,
            safe_read.FileRefused) as e:
        raise CheckpointError(f"{path}: not a readable TDI artifact ({type(e).__name__}: {e}); delete it (and its "
                              f".json) to recompute, or rerun `ssmbench init-tdi --out {path}`") from None
    return tensors, meta


def plot_spectra(meta: dict, out: Path) -> None:
    """Normalized task spectrum vs the channel-mean model spectrum before and after matching (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.semilogy(meta["task_spectrum"], label="task", color="black", lw=1.2)
    ax.semilogy(meta["model_spectrum_before"], label=f"model, F.1 init (loss {meta['loss_before']:.3g})", lw=0.9)
    ax.semilogy(meta["model_spectrum_after"], label=f"model, matched (loss {meta['loss_after']:.3g})", lw=0.9)
    ax.set_xlabel(f"frequency bin k (omega = 2 pi k / {meta['L']})")
    ax.set_ylabel(f"normalized power ({meta['normalization']})")
    ax.set_title(f"TDI power spectra: {meta['dataset']} (S = {meta['samples']}, H = {meta['H']}, M = {meta['M']})")
    ax.legend(fontsize=8)
    fig.set_layout_engine("constrained")  # never the "tight_layout not applied" warning
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    runs.atomic_write_bytes(out, buf.getvalue())


# --------------------------------------------------------------------------------------------------
# Applying to a model


@torch.no_grad()
def apply_base(layers: list[torch.nn.Module], base: str) -> None:
    """Give every S4D layer the A and B of `init.base` (the layers were built with S4D-Lin, see `tdi_base`); DSS, S5
    and LRU layers keep their own initialization."""
    for layer in layers:
        if not hasattr(layer, "A_im"):
            continue
        H, M = layer.A_im.shape
        diag = INITIALIZERS.get(base)(2 * M)
        layer.set_A(diag.A.expand(H, M).to(layer.A_im.device))
        layer.B.copy_(torch.view_as_real(diag.B.to(torch.complex64).expand(H, M)).to(layer.B.device))


@torch.no_grad()
def set_layer(layer: torch.nn.Module, tensors: dict, source: str) -> None:
    """Copy (A, C, log_dt) into an S4D layer, with B = 1 (every direction of C gets the matched C)."""
    H, M = layer.A_im.shape
    if tuple(tensors["A"].shape) != (H, M) or not layer.conjugate_pairs:
        raise SSMBenchError(f"{source}: TDI parameters are for H = {tensors['A'].shape[0]} channels x "
                            f"{tensors['A'].shape[1]} modes but the first SSM layer has H = {H} x {M} modes; "
                            f"set model.d_model/model.ssm.d_state to match, or recompute it with "
                            f"`ssmbench init-tdi --d-model {H} --d-state {2 * M}`")
    dev = layer.A_im.device
    layer.set_dt(torch.exp(tensors["log_dt"].to(dev)))
    layer.set_A(tensors["A"].to(dev))
    layer.B.copy_(torch.view_as_real(torch.ones(H, M, dtype=torch.complex64, device=dev)))
    layer.C.copy_(torch.view_as_real(tensors["C"].to(torch.complex64)).to(dev).expand_as(layer.C))


def stored_modes(layer: torch.nn.Module) -> int:
    """M, the complex modes a DSS, S5 or LRU layer stores (DSS: N, S5: P/2 with conj_sym else P, LRU: N)."""
    return (layer.theta_log if hasattr(layer, "theta_log") else layer.Lambda_im).shape[0]


@torch.no_grad()
def place_shared_modes(model: torch.nn.Module, layer: torch.nn.Module, cfg, context: dict) -> dict:
    """F.1 placement on a layer whose modes are shared by the channels (DSS, S5, LRU; docs/methods.md §I.6):
    omega_n = 2 pi k_n / L for the top-M bins k_1 < ... < k_M of P_task (mode n gets the n-th), set by the layer's
    `place_frequencies(omega, dt_ref)` with dt_ref = sqrt(dt_min dt_max); returns facts for the run record."""
    recipe, data, log = context["recipe"], context["data"], context.get("log", print)
    sigma = cross_covariance(feature_batches(data, model.encoder, cfg.samples, recipe.data.split_seed))
    P_task = task_spectrum(sigma, cfg.tdi.task_power)
    L, M = data.seq_len, stored_modes(layer)
    bins = top_bins(P_task, M)
    dt_ref = math.sqrt(recipe.model.ssm.dt_min * recipe.model.ssm.dt_max)
    layer.place_frequencies(2 * math.pi * bins.double() / L, dt_ref)
    log(f"TDI: F.1 placement of the first {recipe.model.kind} layer's {M} modes on the top bins of the task spectrum "
        f"of {recipe.data.name} (L = {L}; Algorithm 1 is S4D's)")
    return {"placement": "F.1", "bins": bins.tolist(), "samples": min(cfg.samples, len(data.train)), "L": L,
            "route": "encoder" if uses_encoder(data) else "raw", "peak_bin_task": int(P_task.argmax()),
            "task_spectrum": normalize(P_task.double(), cfg.tdi.normalization).tolist()}


def apply_tdi(model: torch.nn.Module, layers: list[torch.nn.Module], cfg, context: dict) -> dict:
    """TDI on the first SSM layer: S4D from `init.artifact` (or the cache), computing and saving it when missing;
    DSS, S5 and LRU by `place_shared_modes`."""
    from ssmbench.models.s4d import S4D

    if not isinstance(layers[0], S4D):
        return place_shared_modes(model, layers[0], cfg, context)
    recipe, data, log = context["recipe"], context["data"], context.get("log", print)
    path = Path(cfg.artifact) if cfg.artifact else default_path(recipe)
    H, M = layers[0].A_im.shape
    if path.is_file():
        tensors, meta = load_artifact(path)
        if meta.get("dataset") != recipe.data.name:
            log(f"note: TDI artifact {path} was computed on '{meta.get('dataset')}', not '{recipe.data.name}'")
        log(f"TDI: loaded {path} (loss {meta['loss_before']:.4g} -> {meta['loss_after']:.4g})")
    else:
        prepare_target(path)
        log(f"TDI: {path} not found; matching the spectrum of {recipe.data.name} ({cfg.tdi.steps} steps)")
        result, meta = compute(recipe, data, model.encoder, H, M)
        save_artifact(path, result, meta)
        tensors = {"A": result.A, "C": result.C, "log_dt": result.log_dt}
        log(f"TDI: loss {meta['loss_before']:.4g} -> {meta['loss_after']:.4g} in {meta['seconds']:.1f} s; saved {path}")
    set_layer(layers[0], tensors, str(path))
    keys = ("samples", "L", "route", "loss_before", "loss_after", "seconds", "peak_bin_task", "peak_bin_before",
            "peak_bin_after", "task_spectrum", "model_spectrum_before", "model_spectrum_after")
    return {"artifact": str(path), **{k: meta[k] for k in keys}}
