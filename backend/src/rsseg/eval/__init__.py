"""`rsseg eval`: score a model on benchmark datasets (metrics, dataset layouts, class-name files, runner).

Light to import: the runner pulls in the engine and the models only when an evaluation runs.
"""

from ..models.prompts import display_name
from .class_files import load_classnames

__all__ = ["display_name", "load_classnames"]
