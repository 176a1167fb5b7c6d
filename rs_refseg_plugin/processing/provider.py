"""The `rsseg` Processing provider: segment_classes, segment_sentence, segment_many and train_from_layers."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import SegmentClassesAlgorithm, SegmentSentenceAlgorithm
from .base import ICON
from .batch_algorithm import SegmentManyAlgorithm
from .train_algorithm import TrainFromLayersAlgorithm


class RsSegProvider(QgsProcessingProvider):
    def id(self):
        return "rsseg"

    def name(self):
        return "RS RefSeg"

    def longName(self):  # noqa: N802 - QGIS API
        return ("RS RefSeg (remote-sensing segmentation from classes or a sentence, of one raster or many, and "
                "training on your layers)")

    def icon(self):
        return QIcon(str(ICON))

    def loadAlgorithms(self):  # noqa: N802
        for algorithm in (SegmentClassesAlgorithm(), SegmentSentenceAlgorithm(), SegmentManyAlgorithm(),
                          TrainFromLayersAlgorithm()):
            self.addAlgorithm(algorithm)
