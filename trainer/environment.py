"""Is this Python ready to run camp jobs? (``camp env``, the plugin's "Check environment").

Dependency installation is the top complaint in the issue trackers of QGIS deep-learning plugins,
so the report is concrete: the interpreter, the version of every package the core needs, the
GPUs torch can see, what is missing or too old, and the one pip command that fixes it for *this*
interpreter. Package versions are read from installed metadata (no imports); only torch is
imported, to ask about CUDA.
"""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

# distribution name -> pip requirement. torch is pinned to the version the project is tested with
# (the CPU wheel here; on a GPU machine install the CUDA build of the same version first).
# numpy<2 and attrs>=23.2 keep Debian's GDAL/QGIS bindings and rasterio working (GUIDE.md 3).
REQUIREMENTS: dict[str, str] = {
    "torch": "torch==2.13.0",
    "lightning": "lightning>=2.2",
    "torchmetrics": "torchmetrics>=1.2",
    "onnx": "onnx>=1.15",
    "onnxruntime": "onnxruntime>=1.17",
    "mlflow": "mlflow>=2.12",
    "numpy": "numpy<2",
    "attrs": "attrs>=23.2",
    "rasterio": "rasterio>=1.3.9",
    "shapely": "shapely>=2.0",
    "pyproj": "pyproj>=3.5",
    "pyogrio": "pyogrio>=0.7",
    "mercantile": "mercantile>=1.2",
    "pystac": "pystac[validation]>=1.10",
    "requests": "requests>=2.28",
    "tqdm": "tqdm>=4.60",
    "pillow": "pillow>=9.4",
    "matplotlib": "matplotlib>=3.6",
}
# Shown in the report's headline; the rest are listed only when missing.
HEADLINE = ("torch", "lightning", "onnxruntime", "mlflow")


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_gb: float


@dataclass(frozen=True)
class EnvironmentReport:
    """What ``check_environment`` found; ``ok`` means every job can run here."""

    python: str
    python_version: str
    platform: str
    packages: dict[str, str | None]  # distribution -> installed version (None: missing)
    missing: tuple[str, ...]  # pip requirements to install (missing or unsuitable)
    cuda_available: bool
    cuda_version: str | None
    gpus: tuple[GpuInfo, ...] = ()
    notes: tuple[str, ...] = ()
    fix_command: str = ""
    ok: bool = field(default=False)

    @property
    def torch(self) -> str | None:
        return self.packages.get("torch")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["missing"] = list(self.missing)
        data["notes"] = list(self.notes)
        data["gpus"] = [asdict(g) for g in self.gpus]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnvironmentReport:
        """Rebuild a report sent as JSON by ``python -m trainer env --json`` in another interpreter."""
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["missing"] = tuple(values.get("missing", ()))
        values["notes"] = tuple(values.get("notes", ()))
        values["gpus"] = tuple(GpuInfo(**g) for g in values.get("gpus", ()))
        return cls(**values)

    def summary(self) -> str:
        lines = [f"Python {self.python_version} at {self.python} ({self.platform})"]
        lines.append("  ".join(f"{name} {self.packages.get(name) or 'MISSING'}" for name in HEADLINE))
        if self.gpus:
            lines += [f"GPU {g.index}: {g.name}, {g.memory_gb:.1f} GB" for g in self.gpus]
            lines.append(f"CUDA {self.cuda_version or '?'}: available")
        else:
            lines.append("CUDA: not available (jobs run on the CPU)")
        lines += list(self.notes)
        if self.ok:
            lines.append("OK: this Python can run every camp job.")
        else:
            lines.append("Missing or unsuitable: " + ", ".join(self.missing))
            lines.append(f"Fix: {self.fix_command}")
        return "\n".join(lines)


def check_environment(python: str | None = None) -> EnvironmentReport:
    """Inspect the running interpreter (``python`` only labels it, e.g. a venv's bin/python)."""
    executable = python or sys.executable
    packages = {name: _installed_version(name) for name in REQUIREMENTS}
    missing = tuple(REQUIREMENTS[name] for name, version in packages.items()
                    if version is None or not _satisfies(version, REQUIREMENTS[name]))
    cuda_available, cuda_version, gpus, notes = _probe_gpus(packages["torch"] is not None)
    fix = _fix_command(executable, missing)
    return EnvironmentReport(
        python=executable, python_version=platform.python_version(), platform=platform.platform(terse=True),
        packages=packages, missing=missing, cuda_available=cuda_available, cuda_version=cuda_version,
        gpus=gpus, notes=notes, fix_command=fix, ok=not missing,
    )


def _installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    """Leading numeric release of a version string ('2.13.0+cpu' -> (2, 13, 0))."""
    parts = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(p) for p in parts.group(0).split(".")) if parts else ()


def _satisfies(version: str, requirement: str) -> bool:
    """Check the one comparison each requirement above carries (>=, <, ==); a build tag is ignored."""
    match = re.search(r"(>=|==|<)\s*([\d.]+)", requirement)
    if not match:
        return True
    op, wanted = match.group(1), _release(match.group(2))
    have = _release(version)[: len(wanted)] if op == "==" else _release(version)
    return {">=": have >= wanted, "==": have == wanted, "<": have < wanted}[op]


def _fix_command(python: str, missing: tuple[str, ...]) -> str:
    if not missing:
        return ""
    # One pip command, so the resolver honours numpy<2 and attrs>=23.2 together with the rest.
    pins = [r for r in (REQUIREMENTS["numpy"], REQUIREMENTS["attrs"]) if r not in missing]
    return f'"{python}" -m pip install ' + " ".join(f'"{r}"' for r in (*missing, *pins))


def _probe_gpus(has_torch: bool) -> tuple[bool, str | None, tuple[GpuInfo, ...], tuple[str, ...]]:
    """GPUs as torch sees them; NVML (nvidia-ml-py) as a fallback that names them without torch."""
    notes: list[str] = []
    if has_torch:
        try:
            import torch

            if torch.cuda.is_available():
                gpus = tuple(GpuInfo(i, torch.cuda.get_device_name(i),
                                     round(torch.cuda.get_device_properties(i).total_memory / 1e9, 1))
                             for i in range(torch.cuda.device_count()))
                return True, torch.version.cuda, gpus, ()
            if torch.version.cuda is None:
                notes.append(f"torch {torch.__version__} is a CPU-only build")
        except Exception as exc:  # noqa: BLE001 - a broken torch install is a finding, not a crash
            notes.append(f"torch is installed but fails to import: {type(exc).__name__}: {exc}")
    gpus = _nvml_gpus()
    if gpus:
        notes.append("NVIDIA GPU(s) present but torch cannot use them: install the CUDA build of torch "
                     "(pip install torch --index-url https://download.pytorch.org/whl/cu124)")
    return False, None, gpus, tuple(notes)


def _nvml_gpus() -> tuple[GpuInfo, ...]:
    try:
        import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver: no GPU to report
        return ()
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            out.append(GpuInfo(i, name.decode() if isinstance(name, bytes) else name, round(memory / 1e9, 1)))
        return tuple(out)
    finally:
        pynvml.nvmlShutdown()

