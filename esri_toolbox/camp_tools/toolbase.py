"""What every CampDetection tool shares: validation through the job config, execute, outputs.

A tool subclass declares its job ``kind``, its parameters and ``FIELDS`` (config field ->
parameter name, for attaching the config's validation message to the right parameter), and
implements ``build_config``. Validation lives in the core's config dataclasses, so a bad value
gets the same message here as in QGIS and on the command line.
"""

from __future__ import annotations

import os
import re
from typing import Any

from .arcgis import by_name, text
from .execution import run_tool_job
from .settings import SettingsError, plan_execution


def config_default(config_cls: type, name: str) -> Any:
    """The core's default for a config field, so the tool dialog shows the same defaults as the CLI."""
    import dataclasses

    return next(f.default for f in dataclasses.fields(config_cls) if f.name == name)


class CampTool:
    kind = ""
    label = ""
    description = ""
    FIELDS: dict[str, str] = {}

    def __init__(self) -> None:
        # ArcGIS reads these from the instance.
        self.label = type(self).label
        self.description = type(self).description
        self.canRunInBackground = True

    # ---- what subclasses provide

    def getParameterInfo(self) -> list[Any]:  # noqa: N802 - ArcGIS's method names
        raise NotImplementedError

    def build_config(self, p: dict[str, Any], prepare: bool) -> Any:
        """The job config from the parameters; ``prepare`` (execute only) may export layers."""
        raise NotImplementedError

    def check(self, p: dict[str, Any]) -> None:
        """Tool-specific checks that need more than the config (files, tile counts, GPUs)."""

    def set_outputs(self, p: dict[str, Any], result: dict[str, Any], messages: Any) -> None:
        """Fill derived output parameters from the job's result, so ArcGIS adds them to the map."""

    # ---- ArcGIS's protocol

    def isLicensed(self) -> bool:  # noqa: N802
        return True

    def updateParameters(self, parameters: list[Any]) -> None:  # noqa: N802
        self.update(by_name(parameters))

    def update(self, p: dict[str, Any]) -> None:
        """Parameter interplay (enable/disable, defaults that follow other values)."""

    def updateMessages(self, parameters: list[Any]) -> None:  # noqa: N802
        from trainer.errors import CampError

        p = by_name(parameters)
        self.check(p)
        ready = all(text(x) is not None for x in parameters if x.parameterType == "Required")
        if not ready or any(x.hasError() for x in parameters):
            return
        try:
            self.build_config(p, prepare=False)
        except CampError as exc:
            self.attach(p, str(exc))

    def execute(self, parameters: list[Any], messages: Any) -> None:
        import arcpy

        from trainer.errors import CampError

        p = by_name(parameters)
        try:
            config = self.build_config(p, prepare=True)
            result = run_tool_job(self.kind, config, messages, plan_execution())
        except (CampError, SettingsError) as exc:
            messages.addErrorMessage(str(exc))
            raise arcpy.ExecuteError(str(exc)) from exc
        self.set_outputs(p, result, messages)

    # ---- helpers

    def attach(self, p: dict[str, Any], message: str) -> None:
        """Show a config error on the parameter it names (else on the first parameter)."""
        for field, name in self.FIELDS.items():
            if re.search(rf"\b{re.escape(field)}\b", message):
                p[name].setErrorMessage(message)
                return
        next(iter(p.values())).setErrorMessage(message)

    @staticmethod
    def check_output_folder(p: dict[str, Any]) -> None:
        """Replace ArcGIS's "already exists" error by what the core allows: Overwrite or Resume."""
        param = p["output_folder"]
        path = text(param)
        if path is None or not os.path.exists(path):
            return
        flags = [name for name in ("overwrite", "resume") if name in p]
        if any(p[name].value for name in flags) or (os.path.isdir(path) and not os.listdir(path)):
            param.clearMessage()
            return
        choices = " or ".join(p[name].displayName for name in flags)
        param.setErrorMessage(f"{path} already holds results: choose another folder, or tick {choices}")

    @staticmethod
    def check_gpu(param: Any, wanted: tuple[str, ...]) -> None:
        """Error on ``param`` when it asks for a GPU the job's Python cannot use."""
        from .arcgis import gpu_problem

        if text(param) not in wanted:
            return
        try:
            problem = gpu_problem(plan_execution())
        except SettingsError as exc:
            problem = str(exc)
        if problem:
            param.setErrorMessage(problem)
