"""Open-vocabulary CLIP models: configs as data (configs.py, no torch), dense features (dense.py),
text (text.py), the tile model (open_vocab.py) and the builder (builder.py)."""
