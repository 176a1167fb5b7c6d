"""Many rasters on Ray: inputs expanded to one request per raster, warm model workers, a manifest."""
