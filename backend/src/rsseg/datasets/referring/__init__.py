"""Referring-segmentation data: the sample record, COCO RLE decoding, and dataset readers.

The synthetic referring scenes are `rsseg.datasets.referring.synthetic` (not re-exported here)."""

from .readers import folder_samples, refsegrs_samples, rrsisd_refer_samples, rrsisd_samples
from .rle import decode_rle, encode_rle, uncompressed_rle
from .sample import ReferringDataError, RefSample, read_image, read_mask, write_png

__all__ = ["RefSample", "ReferringDataError", "read_image", "read_mask", "write_png", "folder_samples",
           "refsegrs_samples", "rrsisd_samples", "rrsisd_refer_samples", "decode_rle", "encode_rle", "uncompressed_rle"]
