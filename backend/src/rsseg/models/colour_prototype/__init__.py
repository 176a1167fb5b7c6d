"""The `test` model's family: weight-free colour matching that lets the whole pipeline run anywhere."""
