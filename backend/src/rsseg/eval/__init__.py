"""`rsseg eval`: score a model on benchmark datasets (metrics, class-name files, runner); the dataset
layouts it reads are `rsseg.datasets.semantic`.

Light to import: the runner pulls in the engine and the models only when an evaluation runs.
"""

from ..datasets.class_files import load_classnames
from ..models.prompts import display_name

__all__ = ["display_name", "load_classnames"]
