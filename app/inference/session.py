"""The one onnxruntime session factory: the service, export checks and benchmarks all open graphs here."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from app.config import ExecutionProvider

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def execution_providers(requested: ExecutionProvider) -> list[str]:
    """The onnxruntime providers for a configured execution provider; CUDA falls back to CPU when absent."""
    if requested == "cuda":
        available = ort.get_available_providers()
        if CUDA_PROVIDER in available:
            return [CUDA_PROVIDER, CPU_PROVIDER]
        logger.warning(
            "execution provider cuda requested but onnxruntime offers only %s: running on CPU",
            ", ".join(available),
        )
    return [CPU_PROVIDER]


def create_session(
    model_path: Path, *, intra_op_threads: int, providers: Sequence[str] = (CPU_PROVIDER,)
) -> ort.InferenceSession:
    """An onnxruntime session with the thread settings that suit a small shared CPU (see ENVIRONMENT.md)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # Spinning threads wait for work by burning CPU; on 2 shared cores they steal time from the tokenizer,
    # the event loop and each other.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model_path), sess_options=options, providers=list(providers))
