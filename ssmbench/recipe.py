"""Recipes: the typed schema of a training run, YAML loading, `--set` overrides and clear errors.

A recipe has `name`, `seed`, `tags` and four sections — `data`, `model`, `init`, `train`. Unknown keys are
errors. The `data` section's adapter-specific keys are validated by that adapter's own `Options` model.
Every error line names the file, the dotted field path and what is allowed.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ssmbench import safe_read
from ssmbench.errors import RecipeError
from ssmbench.paths import escape
from ssmbench.registry import DATASETS, INITIALIZERS, LAYERS, UnknownNameError


def _registered(registry, name: str) -> str:
    try:
        registry.get(name)
    except UnknownNameError as e:
        raise ValueError(e.message) from None
    return name


class Section(BaseModel):
    """A recipe section: unknown keys are errors, and so is inf or NaN in any float field."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def check_data_path(value: str) -> str:
    """Every path a recipe names (`data.root`, adapters' file options, `init.artifact`, `model.stu.cache_dir`) obeys
    the containment rule of ssmbench/paths.py: resolved, symlinks followed, it lies inside the working directory,
    the repository's data/ or a folder listed in $SSMBENCH_DATA_ROOT. So a shared recipe cannot make ssmbench read,
    download or write in arbitrary places.
    """
    problem = escape(value)
    if problem:
        raise ValueError(problem)
    return value


DataPath = Annotated[str, AfterValidator(check_data_path)]


class DataConfig(BaseModel):
    """Common data options; any other key is an option of the named adapter (see `ssmbench data show NAME`)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = Field(description="registered dataset adapter")
    root: DataPath = Field("data", description="folder that holds the datasets: after resolving symlinks, inside the "
                           "working directory, the repository's data/ or a folder in $SSMBENCH_DATA_ROOT")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of train held out for validation where the data has no official validation split")
    train_fraction: float = Field(1.0, gt=0.0, le=1.0, description="share of the training split used (data-efficiency studies)")
    split_seed: int = Field(0, ge=0, lt=2**32, description="seed of validation carving and train subsampling (fixed across runs)")
    num_workers: int = Field(0, ge=0, le=128, description="DataLoader worker processes")
    download: bool = Field(False, description="when the adapter's data folder holds no files, download its official "
                           "archive first, as `ssmbench data download NAME` does (needs internet; smnist: torchvision)")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered(DATASETS, v)

    @property
    def options(self) -> dict[str, Any]:
        """The adapter-specific options (validated, with defaults filled in)."""
        return dict(self.model_extra or {})


class SSMGroupValues(Section):
    """A learning rate or weight decay per group of S4D parameters; null = the global train.lr / train.weight_decay.

    A single number x stands for {dt: x, A: x, B: x, C: null}; a group left out keeps its default. state-spaces/s4
    writes `lr: 0.001` for the same dt/A/B part, but its float also reaches C: a recipe states that with C
    explicitly (docs/methods.md §A "Quirk").
    """

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, v):
        if isinstance(v, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                return v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return {"dt": v, "A": v, "B": v, "C": None}
        return v


class SSMLearningRates(SSMGroupValues):
    dt: Optional[float] = Field(1e-3, ge=0.0, le=10.0, description="the step size parameter")
    A: Optional[float] = Field(1e-3, ge=0.0, le=10.0, description="real and imaginary parts of A")
    B: Optional[float] = Field(1e-3, ge=0.0, le=10.0, description="the input vector B")
    C: Optional[float] = Field(None, ge=0.0, le=10.0, description="the output vector C")


class SSMWeightDecays(SSMGroupValues):
    dt: Optional[float] = Field(0.0, ge=0.0, le=10.0, description="the step size parameter")
    A: Optional[float] = Field(0.0, ge=0.0, le=10.0, description="real and imaginary parts of A")
    B: Optional[float] = Field(0.0, ge=0.0, le=10.0, description="the input vector B")
    C: Optional[float] = Field(None, ge=0.0, le=10.0, description="the output vector C")


class SSMConfig(Section):
    """Options of the S4D layer (docs/methods.md §A, §B)."""

    d_state: int = Field(64, ge=1, le=4096, description="N, the real state size (N/2 complex conjugate pairs)")
    dt_min: float = Field(1e-3, gt=0.0, le=10.0, description="smallest step size dt at initialization (log-uniform in [dt_min, dt_max])")
    dt_max: float = Field(1e-1, gt=0.0, le=10.0, description="largest step size dt at initialization; at most 10 "
                          "(dt |A| beyond that decays a mode within one step)")
    discretization: Literal["zoh", "bilinear"] = Field("zoh", description="zero-order hold or bilinear (Tustin) discretization of the ODE")
    real_transform: Literal["exp", "relu", "none"] = Field("exp", description="parameterization of -Re(A)")
    dt_transform: Literal["exp", "softplus"] = Field("exp", description="dt = exp(param) or softplus(param) "
                                                     "(state-spaces/s4 `dt_transform`; both start log-uniform)")
    n_ssm: Optional[int] = Field(None, ge=1, description="independent (A, B) copies, shared by d_model/n_ssm channels "
                                 "each (channel h uses copy h mod n_ssm); null = one per channel")
    lr: SSMLearningRates = Field(default_factory=SSMLearningRates, description="learning rate per parameter "
                               "group {dt, A, B, C}; null = train.lr; a number x = {dt: x, A: x, B: x, C: null}")
    weight_decay: SSMWeightDecays = Field(default_factory=SSMWeightDecays, description="weight decay per "
                                         "parameter group {dt, A, B, C}; null = train.weight_decay")
    beta: Optional[float] = Field(None, description="initial Sobolev filter exponent; null turns the filter off")
    beta_lr: float = Field(0.01, ge=0.0, le=10.0, description="learning rate of beta (weight decay 0)")
    kappa: Union[Literal["nfft"], float] = Field("nfft", description="frequency scale of the Sobolev filter (1 + k/kappa)^beta")
    path: Literal["fast", "direct"] = Field("fast", description="kernel and FFT path: fast (blocked Vandermonde, FFT-friendly sizes) or direct (materialized Vandermonde, FFT of size 2L); same results")
    backend: Literal["auto", "triton", "torch"] = Field("auto", description="what computes the kernel on a GPU (fast "
                                                      "path): auto = the fused Triton kernels if their self-check "
                                                      "passes on the device, else PyTorch with a warning; triton = "
                                                      "the fused kernels or stop; torch = never Triton (docs/gpu.md)")

    @field_validator("kappa", mode="before")
    @classmethod
    def _positive_kappa(cls, v):
        if v == "nfft" or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < v < float("inf")):
            return v
        raise ValueError(f"must be 'nfft' or a positive finite number (got {v!r:.40})")

    @model_validator(mode="after")
    def _dt_order(self) -> "SSMConfig":
        """model.ssm.dt_min is at most model.ssm.dt_max (equal: every channel starts at the same dt)."""
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min}) is larger than dt_max ({self.dt_max}); swap them")
        return self


class STUConfig(Section):
    """Options of the STU and AR-STU layers (docs/methods.md §E)."""

    k: int = Field(16, ge=1, le=1024, description="number of spectral filters K (top eigenvectors of the Hankel matrix)")
    k_u: int = Field(3, ge=0, le=1024, description="input autoregression: M^u terms on u_t .. u_(t-k_u+1)")
    k_y: int = Field(2, ge=2, le=1024, description="ar-stu: output autoregression order (M^y_1 .. M^y_k_y)")
    hankel: Literal["z", "l"] = Field("z", description="z: Z with positive and negative filters (Eq. 3-4); l: Z_L with positive filters only (App. B)")
    mixing: Literal["full", "tensordot"] = Field("full", description="full: a matrix M^phi_k per filter (Eq. 4, exact); "
                                                 "tensordot: the approximation M^phi_k = diag(m_k) P (Flash-STU), far fewer parameters")
    ar_lr: float = Field(1e-3, ge=0.0, le=10.0, description="ar-stu: absolute learning rate of M^y (weight decay 0); "
                         "default 0.1 x the default train.lr")
    ar_init: float = Field(0.0, ge=-10.0, le=10.0, description="ar-stu: M^y_2 = ar_init * I at initialization "
                           "(0.0: M^y learned from zero, the official code; 1.0 equals stu with y_term: fixed)")
    y_term: Literal["none", "fixed"] = Field("none", description="stu: none (the official code's STU) or fixed "
                                             "(Eq. 4's y_(t-2) term with coefficient 1, for the marginally stable LDS)")
    m_u_init: Literal["truncated-normal", "zero"] = Field("truncated-normal", description="M^u at initialization: "
                                                           "N(0, 1) truncated to [-2, 2] times 1/sqrt(d_model) "
                                                           "(the official code) or zero (App. C.2)")
    cache_dir: Optional[DataPath] = Field(None, description="folder of the on-disk filter cache; null = <data.root>/cache/stu")


BASELINE_KINDS = ("dss", "s5", "lru", "s4")  # the papers' baselines, with their own initializations (docs/methods.md §I)


class LRUConfig(Section):
    """Options of the LRU layer (docs/methods.md §I.4); its state size N is model.ssm.d_state."""

    r_min: float = Field(0.0, ge=0.0, lt=1.0, description="ring initialization: |lambda| >= r_min")
    r_max: float = Field(0.99, gt=0.0, lt=1.0, description="ring initialization: |lambda| <= r_max (< 1)")
    max_phase: float = Field(6.283185307179586, gt=0.0, le=6.283185307179586, description="ring initialization: arg(lambda) in [0, max_phase]")

    @model_validator(mode="after")
    def _ring(self) -> "LRUConfig":
        if self.r_min >= self.r_max:
            raise ValueError(f"r_min ({self.r_min}) must be below r_max ({self.r_max})")
        return self


class DSSConfig(Section):
    """Options of the DSS layer (docs/methods.md §I.2); its N complex modes are model.ssm.d_state."""

    version: Literal["softmax", "exp"] = Field("softmax", description="DSS-softmax (kernel normalized over L, Re(Lambda) "
                                               "free) or DSS-exp (Re(Lambda) = -exp(param) < 0)")
    sep_dt_re_im: bool = Field(True, description="separate step sizes for Re and Im of Lambda (ag1988/dss default)")


class S5Config(Section):
    """Options of the S5 layer (docs/methods.md §I.3); its state size P is model.ssm.d_state."""

    blocks: int = Field(8, ge=1, description="J: Lambda is initialized block-diagonal, J copies of the HiPPO-N "
                        "eigendecomposition of size P/J")
    conj_sym: bool = Field(True, description="keep P/2 states of each conjugate pair, output 2 Re(C x)")
    clip_eigs: bool = Field(False, description="Re(Lambda) = min(Lambda_re, -1e-4): the left half-plane")
    C_init: Literal["trunc_standard_normal", "lecun_normal", "complex_normal"] = Field(
        "trunc_standard_normal", description="C~ = C V with C lecun-normal per row (trunc_standard_normal) or over the "
        "matrix (lecun_normal), or C~ complex normal directly (complex_normal)")


class S4Config(Section):
    """Options of the S4 (DPLR) layer (docs/methods.md §I.5); its real state size N is model.ssm.d_state."""

    rank: int = Field(1, ge=1, le=16, description="rank R of the low-rank part P (HiPPO-LegS needs 1; more start at 0)")
    chunk: int = Field(512, ge=1, description="frequency bins per Cauchy chunk (memory O(H N chunk), recomputed in the backward)")


class ModelConfig(Section):
    """The network: an encoder, n_layers residual blocks of the sequence layer `kind`, a decoder."""

    kind: str = Field("s4d", description="registered sequence layer")
    d_model: int = Field(64, ge=1, le=65536, description="width H: features per time step inside the blocks")
    n_layers: int = Field(4, ge=1, le=1024, description="residual blocks")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout rate in every block")
    tie_dropout: bool = Field(False, description="one dropout mask per (sequence, feature), constant over the "
                              "length (state-spaces `DropoutNd`); false = elementwise")
    dropout_before_gelu: bool = Field(False, description="s4d: also drop the SSM output before the GELU, as "
                                      "state-spaces/s4 `FFTConv` does")
    norm: Literal["batch", "layer", "none"] = Field("batch", description="normalization in each block")
    prenorm: bool = Field(False, description="normalize before the sequence layer (true) or after the residual sum")
    bidirectional: bool = Field(False, description="two kernels, forward causal and backward anti-causal (LRA); s4d only")
    pool: Literal["mean", "last", "none"] = Field("mean", description="how a sequence becomes one output: mean or last "
                                                  "step; none keeps one output per step (per-step targets)")
    ssm: SSMConfig = Field(default_factory=SSMConfig)
    stu: STUConfig = Field(default_factory=STUConfig)
    lru: LRUConfig = Field(default_factory=LRUConfig)
    dss: DSSConfig = Field(default_factory=DSSConfig)
    s5: S5Config = Field(default_factory=S5Config)
    s4: S4Config = Field(default_factory=S4Config)

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered(LAYERS, v)

    @model_validator(mode="after")
    def _causal_stu(self) -> "ModelConfig":
        """STU and AR-STU are causal and take no s4d-only dropout options; model.ssm.n_ssm divides d_model."""
        if self.bidirectional and self.kind in ("stu", "ar-stu"):
            raise ValueError(f"bidirectional: the {self.kind} layer is causal only; set model.bidirectional: false")
        if self.kind == "ar-stu" and self.stu.y_term != "none":
            raise ValueError("stu.y_term: ar-stu learns its y terms (M^y from stu.ar_init; ar_init: 1.0 starts "
                             "as stu with y_term: fixed); y_term applies to kind stu: set model.stu.y_term: none")
        if self.kind in ("stu", "ar-stu") and (self.tie_dropout or self.dropout_before_gelu):
            raise ValueError(f"tie_dropout, dropout_before_gelu: options of the s4d layer, not {self.kind}; set them to false")
        if self.ssm.n_ssm is not None and self.d_model % self.ssm.n_ssm:
            raise ValueError(f"ssm.n_ssm: {self.ssm.n_ssm} does not divide d_model = {self.d_model}; use a divisor "
                             f"of d_model or null (one (A, B) per channel)")
        return self

    @model_validator(mode="after")
    def _baseline_options(self) -> "ModelConfig":
        """Options of the S4D layer that the DSS, S5 and LRU layers do not have, and S5's block sizes."""
        if self.kind in ("dss", "s5", "lru"):  # one set of modes per layer (DSS, S5, LRU) or per channel
            for key in ("n_ssm", "beta"):
                if getattr(self.ssm, key) is not None:
                    raise ValueError(f"ssm.{key}: an option of the s4d layer, not {self.kind}; set it to null")
        if self.kind == "s4" and self.ssm.beta is not None:
            raise ValueError("ssm.beta: an option of the s4d layer, not s4; set it to null")
        if self.kind == "s4" and self.ssm.d_state % 2:
            raise ValueError(f"ssm.d_state: s4 stores conjugate pairs, so d_state must be even (got {self.ssm.d_state})")
        if self.kind == "s5":
            P, J = self.ssm.d_state, self.s5.blocks
            size = P // J if P % J == 0 else 0
            if size == 0 or (self.s5.conj_sym and size % 2):
                raise ValueError(f"s5.blocks: {J} blocks of the state size P = ssm.d_state = {P} need P divisible by J"
                                 f"{' into blocks of even size (s5.conj_sym keeps half of each)' if self.s5.conj_sym else ''}; "
                                 f"change ssm.d_state or s5.blocks")
        return self


class TDIConfig(Section):
    """Algorithm 1 of TDI, power-spectrum matching (docs/methods.md §C); on DSS, S5 and LRU only the F.1 placement
    runs (§I.6), which reads task_power."""

    steps: int = Field(2000, ge=0, le=1_000_000, description="full-batch Adam iterations of the matching loss (s4d; "
                       "dss, s5, lru take the F.1 placement only)")
    lr: float = Field(1e-2, gt=0.0, le=10.0, description="Adam learning rate, cosine-annealed to 0 over the steps")
    normalization: Literal["l2", "sum"] = Field("l2", description="spectrum normalization in the loss: P/||P||_2 or P/sum(P)")
    task_power: Literal["magnitude", "squared"] = Field("magnitude", description="P_task from |FFT(Sigma_xy)| (Definition 2) or its square (Lemma 3.6)")


class InitConfig(Section):
    """How the state matrices start (docs/methods.md §A-§D)."""

    name: str = Field("s4d-lin", description="registered initializer of the diagonal state matrix")
    alpha: float = Field(1.0, ge=0.0, le=1e6, description="scale of Im(A) at initialization (frequency bias, docs/methods.md §B)")
    zero_real_fraction: float = Field(0.0, ge=0.0, le=1.0, description="share p of channels per layer whose state vector starts at Re(A) = 0 with a raw real part (docs/methods.md §D)")
    dt0: Optional[Union[Literal["auto"], float]] = Field(None, description="step size of the zero-real channels: a number, auto = 1/sqrt(L lambda_max(E[x x^T])), null = model.ssm.dt_min")
    samples: int = Field(20000, ge=2, le=10_000_000, description="most training sequences read by data-dependent inits (dt0: auto, tdi)")
    base: str = Field("s4d-lin", description="tdi on s4d: initializer of the layers after the first (a complex-pair init)")
    artifact: Optional[DataPath] = Field(None, description="tdi on s4d: .pt file written by `ssmbench init-tdi`; computed and "
                                         "saved there if missing (never over a file ssmbench did not write; same "
                                         "containment rule as data.root); null = cache under <data.root>/cache/tdi/")
    tdi: TDIConfig = Field(default_factory=TDIConfig)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered(INITIALIZERS, v)

    @field_validator("dt0")
    @classmethod
    def _positive(cls, v):
        if isinstance(v, float) and not 0.0 < v <= 10.0:
            raise ValueError(f"must be a number in (0, 10] (a step size, like model.ssm.dt_max), 'auto' or null (got {v})")
        return v

    @field_validator("artifact")
    @classmethod
    def _pt_file(cls, v):
        if v is not None and not v.endswith(".pt"):
            raise ValueError(f"'{v}' must name a .pt file (its .json and .png are written beside it)")
        return v

    @field_validator("base")
    @classmethod
    def _pair_init(cls, v: str) -> str:
        _registered(INITIALIZERS, v)
        if v in ("tdi", "s4d-real"):
            raise ValueError(f"'{v}' cannot be the base of tdi; use s4d-lin, s4d-inv or s4d-legs")
        return v


class TrainConfig(Section):
    """Optimization (AdamW, cosine schedule with linear warmup), evaluation, precision and logging."""

    epochs: int = Field(1, ge=1, le=100000, description="passes over the training split")
    max_steps: Optional[int] = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(64, ge=1, le=1_000_000, description="the global batch (split across DDP processes)")
    eval_batch_size: Optional[int] = Field(None, ge=1, le=1_000_000, description="batch of the evaluations; null = batch_size")
    lr: float = Field(0.01, gt=0.0, le=10.0, description="peak learning rate of AdamW (cosine schedule with linear warmup)")
    weight_decay: float = Field(0.05, ge=0.0, le=10.0, description="AdamW weight decay (see no_weight_decay)")
    no_weight_decay: list[Literal["bias", "norm", "embedding"]] = Field(
        default_factory=list, description="parameters exempt from weight decay: biases, normalization layers, "
        "embeddings (state-spaces/s4 `optimizer_param_grouping`); [] = decay all")
    warmup_steps: int = Field(0, ge=0, description="steps of linear learning-rate warmup from 0")
    grad_clip: Optional[float] = Field(None, gt=0.0, description="max global gradient norm; null disables")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto = bf16 on CUDA if supported else fp32")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto = CUDA if available, else the CPU")
    eval_every: Optional[int] = Field(None, ge=1, description="evaluate every k steps; null = once per epoch")
    max_eval_batches: Optional[int] = Field(None, ge=1, description="cap the validation evaluations during training "
                                            "(the final test evaluation is not affected; see max_test_batches)")
    max_test_batches: Optional[int] = Field(None, ge=1, description="opt out of testing on the whole test split: cap "
                                            "the final test evaluation (recorded in results.json, marked in reports)")
    checkpoint_every: Optional[int] = Field(None, ge=1, description="also write last.pt every k steps")
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads, at most the CPUs of this machine; null = torch default")
    compile: bool = Field(False, description="torch.compile each residual block (compiles on the first steps; needs a C++ compiler on the CPU)")
    on_nonfinite: Literal["stop", "skip"] = Field("stop", description="a non-finite loss or gradient: stop the run "
                                                  "(exit 3) or skip that update (counted in results.json skipped_steps)")
    tf32: bool = Field(False, description="CUDA: float32 matmuls/convolutions on TF32 tensor cores (faster, ~1e-3 "
                       "relative error); recorded in env.json. FFTs are not affected")
    cuda_graphs: bool = Field(False, description="CUDA: capture the training step (forward to optimizer update) in a "
                              "CUDA graph after 3 warm-up steps and replay it for every full-size batch; ignored on "
                              "the CPU; recorded in env.json. Not with fp16, compile or DDP")
    loggers: list[Literal["tensorboard", "wandb"]] = Field(["tensorboard"], description="metric loggers besides "
                                                           "metrics.jsonl: tensorboard (event files in the run directory), wandb (extra ssmbench[wandb])")
    log_every: Optional[int] = Field(None, ge=1, description="steps between progress rows (loggers; plain lines when "
                                     "the output is not a terminal); null = 20 per run")
    not_learning: Literal["warn", "stop"] = Field("warn", description="classification: when the training loss is "
                                                  "still at the chance level ln(classes) at an evaluation past "
                                                  "not_learning_after of the run, warn (log line, results.json "
                                                  "not_learning) or stop the run there (tested with its best checkpoint)")
    not_learning_after: float = Field(0.25, gt=0.0, le=1.0, description="share of the run's steps after which a training "
                                      "loss at the chance level counts as not learning")

    @field_validator("loggers")
    @classmethod
    def _installed(cls, v: list[str]) -> list[str]:
        for name in v:
            if importlib.util.find_spec(name) is None:
                raise ValueError(f"logger '{name}' needs the {name} package: `pip install {name}`, or remove it")
        return v

    @field_validator("threads")
    @classmethod
    def _cpus(cls, v):
        cpus = os.cpu_count() or 1
        if v is not None and v > cpus:
            raise ValueError(f"{v} threads, but this machine has {cpus} CPUs; use at most {cpus} (or null)")
        return v


class Recipe(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100, description="names the run directory "
                      "runs/<name>-<timestamp>-<hash>/")
    seed: int = Field(0, ge=0, lt=2**32, description="seeds weights, batch order and dropout (data splits: data.split_seed)")
    tags: dict[str, str] = Field(default_factory=dict, description="free labels; sweeps use them to group runs")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _pairs(self) -> "Recipe":
        """Complex-pair initializations (all but s4d-real) store d_state / 2 conjugate pairs."""
        if self.model.kind == "s4d" and self.init.name != "s4d-real" and self.model.ssm.d_state % 2:
            raise ValueError(f"model.ssm.d_state: {self.init.name} stores complex-conjugate pairs, so d_state must be "
                             f"even (got {self.model.ssm.d_state}); use {self.model.ssm.d_state + 1}, or init.name: s4d-real")
        return self

    @model_validator(mode="after")
    def _stu_cache(self) -> "Recipe":
        """Resolve model.stu.cache_dir = null to <data.root>/cache/stu for STU models (kept in recipe.yaml)."""
        if self.model.kind in ("stu", "ar-stu") and self.model.stu.cache_dir is None:
            self.model.stu.cache_dir = str(Path(self.data.root) / "cache" / "stu")
        return self

    @model_validator(mode="after")
    def _per_channel_inits(self) -> "Recipe":
        """TDI and zero-real set A channel by channel, so they need one (A, B) per channel."""
        n_ssm, H = self.model.ssm.n_ssm, self.model.d_model
        if n_ssm is not None and n_ssm < H and (self.init.name == "tdi" or self.init.zero_real_fraction > 0):
            raise ValueError(f"model.ssm.n_ssm: {n_ssm} shares A across channels, but init "
                             f"{'tdi' if self.init.name == 'tdi' else 'zero_real_fraction'} sets A per channel; "
                             f"set model.ssm.n_ssm: null")
        return self

    @model_validator(mode="after")
    def _baseline_inits(self) -> "Recipe":
        """DSS, S5 and LRU start from their papers' initializations; the S4D initializers do not apply to them."""
        kind, init = self.model.kind, self.init
        if kind not in BASELINE_KINDS:
            return self
        if init.name == "tdi" and kind == "s4":
            raise ValueError("init.name: tdi places per-mode frequencies; the s4 layer has a low-rank part P P^* that "
                             "couples its modes, where that placement has no meaning (docs/methods.md §I.6): use "
                             "model.kind: s4d, dss, s5 or lru")
        if init.name == "tdi" and init.artifact is not None:
            raise ValueError(f"init.artifact: holds Algorithm 1's fit of S4D channels; on the {kind} layer, whose modes "
                             f"are shared by the channels, TDI is the F.1 placement computed at the start of the run "
                             f"(docs/methods.md §I.6): remove init.artifact")
        if init.name == "tdi" and init.base != "s4d-lin":
            raise ValueError(f"init.base: {init.base} initializes s4d layers; the {kind} layers after the first keep "
                             f"their own initialization (docs/methods.md §I.6): remove init.base")
        if init.name not in ("s4d-lin", "tdi"):
            raise ValueError(f"init.name: {init.name} initializes the s4d layer; the {kind} layer has its own "
                             f"initialization (docs/methods.md §I): remove init.name")
        if kind == "s4" and (init.alpha != 1.0 or init.zero_real_fraction > 0):
            raise ValueError("init.alpha, init.zero_real_fraction: no meaning for s4, whose low-rank part P P^* has no "
                             "per-mode frequency or real part (docs/methods.md §I.6); use s4d, dss, s5 or lru")
        if kind == "dss" and init.zero_real_fraction > 0 and self.model.dss.version == "exp":
            raise ValueError("init.zero_real_fraction: DSS-exp keeps Re(Lambda) < 0 by construction; set "
                             "model.dss.version: softmax")
        return self

    @model_validator(mode="after")
    def _graphs(self) -> "Recipe":
        """A captured training step cannot hold the GradScaler's host-side decisions or torch.compile's guards."""
        t = self.train
        if t.cuda_graphs and (t.precision == "fp16" or t.compile):
            other = ("train.precision: fp16 (its GradScaler decides on the host); use train.precision: bf16"
                     if t.precision == "fp16" else "train.compile: true; set train.compile: false")
            raise ValueError(f"train.cuda_graphs: not supported with {other}, or train.cuda_graphs: false")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------------------------------
# Loading and error formatting


def _submodel(model: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model class found by following `loc` (field names) from `model`, if any."""
    for key in loc:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


FIELD_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # a key (or dotted field path) shown in a message; others are not echoed (file content)


def _format_errors(err: ValidationError, root: type[BaseModel], prefix: tuple = (), top_keys: list[str] | None = None) -> list[str]:
    lines = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        path = ".".join(p if FIELD_NAME.fullmatch(str(p)) else "(a key that is no field name)" for p in map(str, loc))
        path = path or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            parent = _submodel(root, tuple(e["loc"])[:-1])
            keys = top_keys if (top_keys and len(e["loc"]) == 1) else (list(parent.model_fields) if parent else [])
            allowed = ", ".join(keys)
            msg = "unknown key" + (f"; allowed: {allowed}" if allowed else "")
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        elif e["type"] not in ("literal_error",) and "input" in e and not isinstance(e["input"], (dict, list)):
            msg = f"{msg} (got {e['input']!r:.60})"
        named = not loc and msg.split(":")[0].replace(".", "").replace("_", "").isalnum()  # "model.x: ..." from a recipe check
        lines.append(msg if named else f"{path}: {msg}")
    return lines


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=0.004` -> (["train", "lr"], 0.004). The value is parsed as YAML."""
    if "=" not in text:
        raise RecipeError("--set", [f"{text!r}: expected KEY=VALUE, e.g. train.lr=0.004"])
    key, _, raw = text.partition("=")
    keys = [k for k in key.strip().split(".")]
    if not all(keys):
        raise RecipeError("--set", [f"{text!r}: empty key in the dotted path"])
    try:
        value = load_yaml(raw) if raw.strip() else None
    except RecipeError as e:
        raise RecipeError("--set", [f"{text!r}: value is not valid YAML ({e.problems[0]})"]) from None
    return keys, value


def data_shorthand(override: str) -> str:
    """`permute=false` -> `data.permute=false`: a `--set` key whose first part names no recipe field is a data
    option (as `data prepare` reads its `--set`); `train.lr=0.1` and `seed=1` are kept."""
    first = override.partition("=")[0].strip().split(".")[0]
    return override if first in Recipe.model_fields else f"data.{override.lstrip()}"


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return raw


class RecipeLoader(safe_read.BoundedLoader):
    """`yaml.SafeLoader` under the node bound (`safe_read.BoundedLoader`) without YAML 1.1's surprises: only true/false (any case as YAML 1.2 allows) are booleans,
    a plain yes/no/on/off is refused (YAML 1.1 reads `seed: yes` as 1 and `permute: no` as false), and so is a
    key given twice in one mapping (YAML keeps the last value silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[tuple[str, str], yaml.Mark] = {}
        for key_node, _ in getattr(node, "value", ()):
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                first = seen.setdefault((key_node.tag, key_node.value), key_node.start_mark)
                if first is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key_node.value:.60}' given twice (first at line {first.line + 1}); "
                        f"keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml11_bool(self, node):
        raise yaml.constructor.ConstructorError(
            None, None, f"'{node.value}' is a boolean only in YAML 1.1; write true or false (or quote it for the "
            f"text '{node.value}')", node.start_mark)


YAML11_BOOL = "tag:ssmbench,2026:yaml11-bool"
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(
    r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))  # copies the inherited resolvers first
RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in pairs if tag != "tag:yaml.org,2002:bool" or rx.pattern.startswith("^(?:true")]
    for first, pairs in RecipeLoader.yaml_implicit_resolvers.items()}
RecipeLoader.add_implicit_resolver(YAML11_BOOL, re.compile(
    r"^(?:yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF)$"), list("yYnNoO"))
RecipeLoader.add_constructor(YAML11_BOOL, RecipeLoader.construct_yaml11_bool)


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """YAML of a recipe or a `--set` value (`RecipeLoader`) under the node bound of ssmbench/safe_read.py (aliases
    expanded), with every failure a RecipeError: syntax errors (with line and column), a document that expands
    past the bound, nesting too deep for the parser (RecursionError) and integers too long to convert (ValueError,
    Python's digit limit)."""
    try:
        return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(source, [f"invalid YAML{at}: {problem}"]) from None
    except RecursionError:
        raise RecipeError(source, ["invalid YAML: nested too deeply"]) from None
    except ValueError as e:  # e.g. a 5000-digit integer, or a date like 2020-13-45
        problem = str(e).splitlines()[0].split("; use sys.")[0]  # not Python's advice to raise the digit limit
        raise RecipeError(source, [f"invalid YAML: {problem}"]) from None


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted field names of a (resolved) recipe: {"model": {"ssm": {"lr": 1}}} -> {"model.ssm.lr": 1}; lists and
    scalars are leaves (the names `--set` takes)."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; every failure is a RecipeError naming the file."""
    src = str(path)
    try:  # a regular file under the `recipe` size cap (ssmbench/safe_read.py)
        text = safe_read.read_bytes(path, "recipe").decode("utf-8")
    except FileNotFoundError:
        raise RecipeError(src, ["file not found"]) from None
    except safe_read.FileRefused as e:
        raise RecipeError(src, [e.problem]) from None
    except UnicodeDecodeError:
        raise RecipeError(src, ["not a UTF-8 text file (is it a recipe?)"]) from None
    raw = load_yaml(text, src)
    if raw is None:
        raise RecipeError(src, ["the file is empty; a recipe needs at least `name` and `data.name`"])
    if not isinstance(raw, dict):
        raise RecipeError(src, [f"the top level must be a mapping of sections, got {type(raw).__name__}"])
    return raw


def read_recipe_mapping(path: Path) -> dict[str, Any]:
    """`read_yaml_mapping` of a recipe file; a sweep file (a `grid` and no `data`) is refused with the right command."""
    raw = read_yaml_mapping(path)
    if "grid" in raw and "data" not in raw:
        raise RecipeError(str(path), [f"this is a sweep file (it has a `grid`), not a recipe: use `ssmbench sweep {path}`"])
    if not set(raw) & set(Recipe.model_fields):  # some other file: name none of its lines
        raise RecipeError(str(path), [f"not a recipe: its top level has none of the keys {', '.join(Recipe.model_fields)}"])
    return raw


def validate_recipe(raw: dict[str, Any], source: str = "<recipe>") -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(source, _format_errors(e, Recipe)) from None
    except (RecursionError, OverflowError) as e:
        raise RecipeError(source, [f"cannot validate: {type(e).__name__}"]) from None
    adapter = DATASETS.get(recipe.data.name)
    try:
        options = adapter.Options.model_validate(recipe.data.model_extra or {})
    except ValidationError as e:
        allowed = list(DataConfig.model_fields) + list(adapter.Options.model_fields)
        raise RecipeError(source, _format_errors(e, adapter.Options, ("data",), allowed)) from None
    recipe.data.__pydantic_extra__ = options.model_dump(mode="json")
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load, override and validate a recipe file."""
    path = Path(path)
    raw = apply_overrides(read_recipe_mapping(path), list(overrides or []))
    return validate_recipe(raw, str(path))
