"""The ``camp`` Processing provider: the algorithms in the toolbox, the modeler and qgis_process."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from trainer import __version__

from . import resource_path
from .algorithms import ALGORITHMS


class CampProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "camp"

    def name(self) -> str:
        return "Camp Mapper"

    def longName(self) -> str:  # noqa: N802
        return f"Camp Mapper {__version__}"

    def icon(self) -> QIcon:
        return QIcon(str(resource_path("icons", "camp.svg")))

    def loadAlgorithms(self) -> None:  # noqa: N802
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
