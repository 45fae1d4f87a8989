"""The engines that run the artifact's graph, behind one interface: padded ``input_ids`` and ``attention_mask`` in,
one array per graph output out.

- onnxruntime on the CPU, or on CUDA when ``execution_provider=cuda`` and onnxruntime-gpu is installed;
- OpenVINO on the CPU, with a precision hint: ``bf16`` where the CPU computes bfloat16 natively (AMX or
  AVX-512-BF16: OpenVINO lists ``BF16`` among the CPU's optimisation capabilities), ``f32`` everywhere. The graph is
  the artifact's own (its int8 weights stay int8; the hint sets the precision of the activations).

Which one serves is decided at start-up by measurement (:mod:`app.inference.selection`); this module only lists the
candidates a machine offers and builds them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from app.artifact import ArtifactError
from app.config import EngineSetting, ExecutionProvider
from app.errors import ConfigurationError
from app.inference.session import CUDA_PROVIDER, create_session, execution_providers

logger = logging.getLogger(__name__)

Runtime = Literal["onnxruntime", "openvino"]

# Padded tokens (texts x longest text) per model call that suit each engine, measured at batch 32 on 2 cores with
# AMX (bench/results/engines.json, token_budget_sweep): onnxruntime's int8 kernels gain nothing from larger calls and
# lose to padding (256: 25.7 texts/s, 4,096: 15.7), while OpenVINO's bf16 (AMX) kernels need larger matrices to fill
# their tiles (256: 42.2, 1,024: 58.0, 4,096: 55.3). KOMMUNROUTER_MAX_BATCH_TOKENS overrides.
MAX_BATCH_TOKENS = {
    "onnxruntime-cpu": 256,
    "onnxruntime-cuda": 8192,
    "openvino-f32": 1024,
    "openvino-bf16": 1024,
}
OPENVINO_DEVICE = "CPU"


class Engine(Protocol):
    """A loaded graph that runs padded batches. ``run`` is called from one thread at a time."""

    @property
    def name(self) -> str:
        """``onnxruntime-cpu``, ``onnxruntime-cuda``, ``openvino-bf16`` or ``openvino-f32``."""
        ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def device(self) -> str:
        """Where the graph runs, as the runtime names it (``CPUExecutionProvider``, ``OpenVINO CPU bf16``)."""
        ...

    @property
    def max_batch_tokens(self) -> int:
        """The padded tokens per call that suit this engine."""
        ...

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_shapes(self) -> dict[str, Sequence[int | str | None]]: ...

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph output for int64 ``[batch, sequence]`` inputs, by output name."""
        ...


class OnnxRuntimeEngine:
    """The graph in an onnxruntime session (the session factory's thread settings)."""

    runtime: Runtime = "onnxruntime"

    def __init__(self, session: Any) -> None:
        self.session = session
        self._output_names = [node.name for node in session.get_outputs()]

    @classmethod
    def load(cls, model_path: Path, *, providers: Sequence[str], threads: int) -> OnnxRuntimeEngine:
        """Raises :class:`~app.artifact.ArtifactError` when onnxruntime cannot load the graph."""
        try:
            return cls(create_session(model_path, providers=providers, intra_op_threads=threads))
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise ArtifactError(model_path.parent, [f"onnxruntime cannot load {model_path.name}: {exc}"]) from exc

    @property
    def device(self) -> str:
        providers: list[str] = self.session.get_providers()
        return providers[0]

    @property
    def name(self) -> str:
        return "onnxruntime-cuda" if self.device == CUDA_PROVIDER else "onnxruntime-cpu"

    @property
    def max_batch_tokens(self) -> int:
        return MAX_BATCH_TOKENS[self.name]

    @property
    def input_names(self) -> list[str]:
        return [node.name for node in self.session.get_inputs()]

    @property
    def output_shapes(self) -> dict[str, Sequence[int | str | None]]:
        return {node.name: node.shape for node in self.session.get_outputs()}

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self._output_names, {"input_ids": input_ids, "attention_mask": attention_mask})
        return dict(zip(self._output_names, values, strict=True))


OpenVinoPrecision = Literal["bf16", "f32"]


class OpenVinoEngine:
    """The graph compiled by OpenVINO for the CPU with a precision hint; one infer request, reused."""

    runtime: Runtime = "openvino"

    def __init__(self, compiled: Any, precision: OpenVinoPrecision) -> None:
        self.compiled = compiled
        self.precision = precision
        self._request = compiled.create_infer_request()
        self._outputs = [(port.get_any_name(), port) for port in compiled.outputs]

    @classmethod
    def load(cls, model: Any, *, precision: OpenVinoPrecision, threads: int) -> OpenVinoEngine:
        """Compile a model read by :func:`read_openvino_model` (read once, compiled per precision)."""
        import openvino as ov

        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": threads,
            # One call at a time, as fast as possible (the micro-batcher makes the batches).
            "PERFORMANCE_HINT": "LATENCY",
            # Threads pinned to cores cannot move away from other processes on a shared host or in a container
            # with a CPU quota: on 2 busy cores pinning halved the bf16 rate (10.8 vs 22.3 texts/s at batch 1).
            "ENABLE_CPU_PINNING": False,
        }
        return cls(ov.Core().compile_model(model, OPENVINO_DEVICE, config), precision)

    @property
    def name(self) -> str:
        return f"openvino-{self.precision}"

    @property
    def device(self) -> str:
        return f"OpenVINO {OPENVINO_DEVICE} {self.precision}"

    @property
    def max_batch_tokens(self) -> int:
        return MAX_BATCH_TOKENS[self.name]

    @property
    def input_names(self) -> list[str]:
        return [port.get_any_name() for port in self.compiled.inputs]

    @property
    def output_shapes(self) -> dict[str, Sequence[int | str | None]]:
        shapes: dict[str, Sequence[int | str | None]] = {}
        for name, port in self._outputs:
            shapes[name] = [dim.get_length() if dim.is_static else None for dim in port.get_partial_shape()]
        return shapes

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        self._request.infer({"input_ids": input_ids, "attention_mask": attention_mask})
        # The request's tensors are overwritten by the next call: copy them out.
        return {name: np.array(self._request.get_tensor(port).data, copy=True) for name, port in self._outputs}


def openvino_available() -> bool:
    """Whether the openvino package can be imported (it is a service dependency, but an install may lack it)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_precisions() -> list[OpenVinoPrecision]:
    """The precision hints worth trying on this CPU, the likely fastest first."""
    import openvino as ov

    capabilities = ov.Core().get_property(OPENVINO_DEVICE, "OPTIMIZATION_CAPABILITIES")
    return ["bf16", "f32"] if "BF16" in capabilities else ["f32"]


def read_openvino_model(model_path: Path) -> Any:
    """The ONNX graph as an OpenVINO model (read once; every precision compiles from it)."""
    import openvino as ov

    return ov.Core().read_model(str(model_path))


@dataclass(frozen=True)
class EngineCandidate:
    """An engine this machine offers, not yet loaded."""

    name: str
    runtime: Runtime
    load: Callable[[], Engine]


def _openvino_candidates(model_path: Path, threads: int) -> list[EngineCandidate]:
    shared: dict[str, Any] = {}

    def loader(precision: OpenVinoPrecision) -> Callable[[], Engine]:
        def load() -> Engine:
            try:
                if "model" not in shared:
                    shared["model"] = read_openvino_model(model_path)
                return OpenVinoEngine.load(shared["model"], precision=precision, threads=threads)
            except Exception as exc:  # OpenVINO raises RuntimeError and its own types
                message = f"openvino cannot load {model_path.name} ({precision}): {exc}"
                raise ArtifactError(model_path.parent, [message]) from exc

        return load

    return [
        EngineCandidate(f"openvino-{precision}", "openvino", loader(precision)) for precision in openvino_precisions()
    ]


def engine_candidates(
    model_path: Path, *, setting: EngineSetting, execution_provider: ExecutionProvider, threads: int
) -> list[EngineCandidate]:
    """The engines to measure for a setting, the likely fastest first; the last is the fallback.

    CUDA stays on onnxruntime: with a GPU at hand (``execution_provider=cuda``) onnxruntime on CUDA is the only
    candidate of ``auto``. Raises :class:`~app.errors.ConfigurationError` for ``openvino`` without the package.
    """
    providers = execution_providers(execution_provider)
    onnxruntime = EngineCandidate(
        "onnxruntime-cuda" if providers[0] == CUDA_PROVIDER else "onnxruntime-cpu",
        "onnxruntime",
        lambda: OnnxRuntimeEngine.load(model_path, providers=providers, threads=threads),
    )
    if setting == "onnxruntime" or (setting == "auto" and providers[0] == CUDA_PROVIDER):
        return [onnxruntime]
    if not openvino_available():
        if setting == "openvino":
            raise ConfigurationError("KOMMUNROUTER_ENGINE=openvino, but the openvino package is not installed")
        logger.warning("openvino is not installed: engine auto measures onnxruntime only")
        return [onnxruntime]
    openvino = _openvino_candidates(model_path, threads)
    if setting == "openvino":
        if execution_provider == "cuda":
            logger.warning("KOMMUNROUTER_ENGINE=openvino runs on the CPU: execution provider cuda is not used")
        return openvino
    return [*openvino, onnxruntime]
