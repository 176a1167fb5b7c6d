"""Which source bands feed the model's three inputs: automatic, or chosen by band name and colour.

Each input lists the layer's bands as "3: Red (B4)" (number, colour interpretation, description), so
a Landsat scene's red, green and blue can be found without knowing the sensor's band order.
"""

from __future__ import annotations

from typing import Optional

from qgis.PyQt.QtWidgets import QComboBox, QHBoxLayout, QWidget

INPUTS = ("Red input", "Green input", "Blue input")


def band_label(layer, band: int) -> str:
    provider = layer.dataProvider()
    colour = provider.colorInterpretationName(band) if provider is not None else ""
    name = layer.bandName(band)
    described = "" if name in (f"Band {band}", "") else name.split(":", 1)[-1].strip()
    parts = [p for p in (colour if colour not in ("Undefined", "") else "", described) if p]
    return f"{band}: {' / '.join(parts)}" if parts else f"{band}"


class BandPicker(QWidget):
    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.combos = []
        for tip in INPUTS:
            combo = QComboBox(self)
            combo.setToolTip(f"The source band for the model's {tip.lower()} (automatic: the raster's colour "
                             "bands, or its first three)")
            layout.addWidget(combo)
            self.combos.append(combo)
        self.set_layer(None)

    def set_layer(self, layer) -> None:
        count = layer.bandCount() if layer is not None else 0
        for combo in self.combos:
            combo.clear()
            combo.addItem("auto", None)
            for band in range(1, count + 1):
                combo.addItem(band_label(layer, band), band)

    def set_bands(self, bands: Optional[tuple[int, ...]]) -> None:
        for i, combo in enumerate(self.combos):
            index = combo.findData(bands[i]) if bands and i < len(bands) else 0
            combo.setCurrentIndex(max(index, 0))

    def bands(self) -> Optional[tuple[int, ...]]:
        """The chosen bands in input order; None when all are automatic (a partial choice is kept as given:
        the backend says what a model needs)."""
        chosen = tuple(c.currentData() for c in self.combos if c.currentData() is not None)
        return chosen or None
