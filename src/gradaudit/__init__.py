"""gradaudit: do feature attributions highlight the features a model uses?

Layers (each imports only the ones before it): data -> models -> training -> attribution
-> masking -> evaluation -> experiments -> report / cli.
"""

from ._validation import DataError, GradauditError, ParameterError, ParameterTypeError

__version__ = "0.1.0"

__all__ = ["DataError", "GradauditError", "ParameterError", "ParameterTypeError", "__version__"]
