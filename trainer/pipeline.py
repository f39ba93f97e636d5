"""The main job, ``camp run``: fetch -> train (with every export) -> detect -> evaluate, one extent.

Each step is the same job the single commands run, with its own config derived from
:class:`~trainer.config.PipelineConfig`; this module only sequences them and splits the progress
bar. Results go to OUT/dataset, OUT/run, OUT/detect.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import PipelineConfig
from .errors import OverpassError, TileFetchError
from .progress import Progress, SubProgress, check_cancelled

OFFLINE_RUN = (
    "Offline, run the main job on local data: camp run --imagery 'file:///path/to/tiles/{z}/{x}/{y}.png' "
    "(or a GeoTIFF) --labels buildings.geojson --bbox W,S,E,N --zoom Z --out DIR "
    "(see the README's offline example)."
)

# Share of the progress bar per step (training dominates the wall time).
_STEPS = (("fetch", 0.0, 0.15), ("train", 0.15, 0.85), ("detect", 0.85, 0.97), ("evaluate", 0.97, 1.0))


@dataclass(frozen=True)
class PipelineResult:
    out: Path
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    summaries: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "seconds": round(self.seconds, 1), "steps": self.steps}

    def summary(self) -> str:
        lines = [f"camp run finished in {self.seconds / 60:.1f} min; results in {self.out}"]
        for name, text in self.summaries.items():
            lines.append(f"\n[{name}]")
            lines.append(text)
        return "\n".join(lines)


def run_pipeline(config: PipelineConfig, progress: Progress) -> PipelineResult:
    from .detect import run_detect
    from .evaluate import run_evaluate
    from .fetch import preflight, run_fetch
    from .training import run_train

    start = time.perf_counter()
    # Fail within seconds when the sources are unreachable (e.g. offline), before any work.
    try:
        preflight(config.imagery, config.labels, config.overpass_url, timeout=10.0)
    except (TileFetchError, OverpassError) as exc:
        raise type(exc)(f"{exc}\n{OFFLINE_RUN}") from exc
    steps = {name: SubProgress(progress, start_, end, f"{name}: ") for name, start_, end in _STEPS}
    results: dict[str, Any] = {}

    results["fetch"] = run_fetch(config.fetch_config, steps["fetch"])
    check_cancelled(progress)
    results["train"] = run_train(config.train_config, steps["train"])
    check_cancelled(progress)
    results["detect"] = run_detect(config.detect_config, steps["detect"])
    check_cancelled(progress)
    # Compare with the labels the dataset was built from (no second Overpass query). Note the
    # extent includes the training chips: the honest accuracy figure is the run's test split.
    evaluate_config = config.evaluate_config
    fetched_labels = config.out / "dataset" / "labels.geojson"
    if fetched_labels.is_file():
        evaluate_config = evaluate_config.replace(labels=str(fetched_labels))
    results["evaluate"] = run_evaluate(evaluate_config, steps["evaluate"])
    progress.report(1.0, "done")
    return PipelineResult(
        out=config.out,
        steps={name: r.to_dict() for name, r in results.items()},
        seconds=time.perf_counter() - start,
        summaries={name: r.summary() for name, r in results.items()},
    )
