"""RS RefSeg QGIS plugin. It never imports torch: models run in the rsseg backend."""


def classFactory(iface):  # noqa: N802 - QGIS plugin entry point
    from .plugin import RsRefSegPlugin

    return RsRefSegPlugin(iface)
