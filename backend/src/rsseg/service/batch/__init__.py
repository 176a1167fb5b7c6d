"""Many rasters on Ray: one request per raster, warm model workers, a manifest. In the service, since the
worker serves `batch` records."""
