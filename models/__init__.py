"""The built-in image classifiers: ordinary user code, reached by `class_path` like a user's model.

This folder is not installed as a package (a top-level `models` in site-packages would shadow a
user's own `models` module): the built-in studies name these classes by class path, resolved
from the project's folder (`search.train.model.PROJECT_ROOT`), and `model.name` is shorthand for
the same class paths (`search.config.spec.BUILTIN_MODELS`), given the data's class count and channels.
"""
