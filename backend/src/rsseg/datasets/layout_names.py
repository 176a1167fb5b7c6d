"""The names of the benchmark layouts (standard library only: `rsseg --help` lists them); datasets/semantic.py
defines each, and a test keeps the two in step."""

DATASET_CHOICES = ("loveda", "loveda-urban", "potsdam", "vaihingen", "openearthmap", "dlrsd", "isaid", "folder")
