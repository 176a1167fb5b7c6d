"""Referring-segmentation data: the sample record, COCO RLE decoding, and dataset readers."""

from .common import ReferringDataError, RefSample, read_image, read_mask, write_png
from .referring import folder_samples, refsegrs_samples, rrsisd_refer_samples, rrsisd_samples
from .rle import decode_rle, encode_rle, uncompressed_rle

__all__ = ["RefSample", "ReferringDataError", "read_image", "read_mask", "write_png", "folder_samples",
           "refsegrs_samples", "rrsisd_samples", "rrsisd_refer_samples", "decode_rle", "encode_rle", "uncompressed_rle"]
