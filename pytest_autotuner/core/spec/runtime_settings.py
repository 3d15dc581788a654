"""The runtime sections of a tuning spec: the simulator, Docker, deploy files, cost and the regression gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pytest_autotuner.core.spec.sglang_args import SHIPPED_VERSIONS
from pytest_autotuner.core.spec.spec_model import (
    MAX_ARGS,
    MAX_GPUS,
    MAX_LIST,
    SIM_OWNED_FLAGS,
    GpuId,
    SpecFiles,
    SpecModel,
    refuse_owned,
    unique_gpus,
)
from pytest_autotuner.core.spec.spec_text import preview
from pytest_autotuner.core.spec.tokens import TokenizerError

__all__ = ["CostSettings", "DeploySettings", "DockerSettings", "RegressionSettings", "SimulatorSettings"]


class SimulatorSettings(SpecModel):
    """Options of the built-in simulator runtime (``--sim-*`` flags)."""

    gpu: Literal["h100", "h200", "a100-80g", "b200", "b300", "gb200", "gb300", "l40s", "rtx-pro-6000"] = "h100"
    num_gpus: int = Field(1, ge=1, le=MAX_GPUS)
    speedup: float = Field(
        100.0,
        gt=0,
        le=1e6,
        description="Simulated seconds per wall second. The figures are in the simulator's time and do not depend "
        "on it; a host too slow for it fails the trial as host_too_slow (docs/runtimes.md).",
    )
    startup_scale: float = Field(1.0, gt=0, le=1e6, description="Multiplies the simulated startup time.")
    noise: float | None = Field(None, ge=0, le=10)
    speculative_acceptance: list[Annotated[float, Field(gt=0, le=1)]] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Speculative decoding: the probability that draft position i is accepted given that every "
        "position before it was, one rate per position (the last repeats), e.g. [0.8, 0.7, 0.6]; measure it on a "
        "real server (sglang:spec_accept_length). Default: by algorithm (docs/runtimes.md).",
    )
    extra_args: list[str] = Field(
        default_factory=list,
        max_length=MAX_ARGS,
        description="More --sim-* flags, verbatim (not the address, port, model, seed or launch time).",
    )

    @field_validator("extra_args")
    @classmethod
    def _not_owned(cls, value: list[str]) -> list[str]:
        return refuse_owned(value, SIM_OWNED_FLAGS)

    sglang_version: str | None = Field(
        None,
        description="The SGLang release whose flags the simulator accepts (a shipped table: "
        f"{', '.join(SHIPPED_VERSIONS)}); default: the version the spec's image tag names, else the newest.",
    )

    tokenizer: str | None = Field(
        None,
        description="A tokenizer.json, or a folder holding one (relative to the spec file), that the simulator "
        "counts and caches prompt tokens with, as SGLang does with the model's tokenizer; the client then builds "
        "prompts of the requested length by its count. Default: the model folder's tokenizer.json when the model "
        "is a local folder holding one, else the word rule (one token per whitespace-separated word).",
    )
    _tokenizer_path: str | None = PrivateAttr(default=None)

    @property
    def tokenizer_path(self) -> str | None:
        """The absolute path of the tokenizer.json that ``tokenizer`` names, or None."""
        return self._tokenizer_path

    @model_validator(mode="after")
    def _tokenizer_readable(self, info: ValidationInfo) -> SimulatorSettings:
        if self.tokenizer is None:
            return self
        context = info.context if isinstance(info.context, dict) else {}
        path = Path(str(context.get("spec_dir", ".")), self.tokenizer).resolve()
        files: SpecFiles | None = context.get("files")
        try:
            self._tokenizer_path = str(path) if files is None else files.read_tokenizer(str(path))
        except TokenizerError as err:
            raise ValueError(f"`simulator.tokenizer` is {preview(self.tokenizer, 200)}: {err}") from None
        return self

    @field_validator("sglang_version")
    @classmethod
    def _shipped_version(cls, value: str | None) -> str | None:
        if value is not None and value not in SHIPPED_VERSIONS:
            raise ValueError(
                f"`simulator.sglang_version` is {value!r}; the simulator imitates one of: {', '.join(SHIPPED_VERSIONS)}"
            )
        return value


class DockerSettings(SpecModel):
    """Options of the docker runtime."""

    image: str | None = Field(None, description="Full image reference; default lmsysorg/sglang:<runtime_image_tag>.")
    pull: Literal["missing", "always", "never"] = "missing"
    gpus: Literal["auto", "all", "none"] | Annotated[int, Field(ge=0, le=MAX_GPUS)] | list[GpuId] = Field(
        "auto",
        description="auto: tp-size x dp-size GPUs from `gpus` (or 0..n-1); all; none; a count; ids.",
    )
    shm_size: str | None = "16g"
    ipc_mode: str | None = "host"
    init: bool = Field(True, description="Run an init process so signals reach the server.")
    volumes: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_ARGS, description="host path -> container_path[:ro|:rw]"
    )
    env: dict[str, str] = Field(default_factory=dict, max_length=MAX_ARGS)
    extra_args: list[str] = Field(
        default_factory=list,
        max_length=MAX_ARGS,
        description="Appended to the server command line (not the address, port or model: the runtime sets them).",
    )
    container_port: int | None = Field(None, ge=1, le=65535)
    stop_timeout: float = Field(10.0, ge=0, le=3600)
    hf_cache: str | None = Field(None, description="Host HF cache; default $HF_HOME or ~/.cache/huggingface.")

    @field_validator("volumes")
    @classmethod
    def _volume_modes(cls, value: dict[str, str]) -> dict[str, str]:
        for host, target in value.items():
            _, _, mode = target.partition(":")
            if mode and mode not in ("ro", "rw"):
                raise ValueError(
                    f"`docker.volumes[{preview(host, 80)}]` is {preview(target, 80)}; write the mode as `:ro` or "
                    "`:rw` (or leave it out)"
                )
        return value

    @field_validator("gpus")
    @classmethod
    def _gpu_ids(cls, value: Any) -> Any:
        return unique_gpus(value) if isinstance(value, list) else value

    @field_validator("extra_args")
    @classmethod
    def _not_owned(cls, value: list[str]) -> list[str]:
        return refuse_owned(value)


_K8S_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class DeploySettings(SpecModel):
    """How the deploy files of the confirmed best are written (``pytest_autotuner/deploy``)."""

    name: str | None = Field(
        None,
        pattern=_K8S_NAME,
        description="Name of the Kubernetes Deployment, Service and Compose service (a DNS-1123 label); default: "
        "the task name made one.",
    )
    namespace: str | None = Field(None, pattern=_K8S_NAME, description="Kubernetes namespace; default: none set.")
    gpu_resource: str = Field(
        "nvidia.com/gpu",
        pattern=r"^[a-z0-9.-]+/[a-z0-9._-]+$",
        description="The extended resource a pod requests GPUs by (tp-size x dp-size x pp-size of them).",
    )
    model_cache_claim: str | None = Field(
        None,
        pattern=_K8S_NAME,
        description="PersistentVolumeClaim mounted as the model cache (the HF cache, or /model for a local model); "
        "default: an emptyDir, downloaded again by every pod.",
    )
    hf_token_secret: str = Field(
        "hf-token",
        pattern=_K8S_NAME,
        description="Kubernetes Secret whose `token` key becomes HF_TOKEN (optional: a public model needs none).",
    )
    folder: str | None = Field(
        None,
        description="The committed deploy files that --autotune-check compares with the baseline's configuration, "
        "relative to the spec file, a folder named *.deploy (never collected as specs); default: <spec "
        "stem>.deploy next to it (written with the baseline).",
    )

    @field_validator("folder")
    @classmethod
    def _deploy_suffix(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).name.endswith(".deploy"):
            raise ValueError(
                f"`deploy.folder` is {preview(value, 200)}; name a folder ending in .deploy (e.g. "
                f"{preview(str(Path(value).with_name(Path(value).name + '.deploy')), 200)}): the plugin never "
                "collects files in such folders as specs"
            )
        return value


class CostSettings(SpecModel):
    """What a GPU-hour costs: the cost of serving the best and of the tuning run, in the summary and report."""

    gpu_hour: Annotated[float, Field(gt=0, le=1e6)] | dict[str, Annotated[float, Field(gt=0, le=1e6)]] = Field(
        description='Price of one GPU-hour, or a table per GPU name (e.g. {"h100": 2.49, "a100-80g": 1.29}).',
    )
    currency: str = Field("USD", min_length=1, max_length=8)
    source: str = Field(
        "the spec's cost.gpu_hour", max_length=400, description="Where the price comes from (shown with it)."
    )

    @field_validator("gpu_hour")
    @classmethod
    def _table(cls, value: Any) -> Any:
        if isinstance(value, dict) and not value:
            raise ValueError("`cost.gpu_hour` is an empty table; give a price per GPU name or one number")
        return value


class RegressionSettings(SpecModel):
    """How a run is compared with its committed baseline."""

    tolerance: float = Field(
        0.10, gt=0, le=100, description="Relative change for the worse that counts as a regression."
    )
    baseline_runs: int = Field(5, ge=2, le=100, description="Confirmation runs recorded in a baseline.")
    metrics: dict[str, float] = Field(
        default_factory=dict,
        max_length=MAX_LIST,
        description='Per-metric tolerances, e.g. {"e2e p90": 0.2, "output_throughput": 0.05}.',
    )
