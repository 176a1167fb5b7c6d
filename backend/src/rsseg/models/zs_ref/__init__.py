"""Zero-shot referring segmentation: SAM mask proposals ranked by CLIP global-local features, a
rule-based sentence parser and spatial re-ranking (docs/zero-shot.md). Registers the "zs_ref" builder."""
