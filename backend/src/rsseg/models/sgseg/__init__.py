"""SGSeg: soft-guided open-vocabulary segmentation (docs/sgseg.md)."""
