"""CNN variant registry; importing this package registers every built-in variant."""
from cnn.models.registry import (
    VariantSpec,
    count_parameters,
    create_variant,
    get_variant,
    list_variants,
    register_variant,
    resolve_input_size,
    unregister_variant,
    variant_table,
)
from cnn.models.generic import (
    GenericCNN,
    GenericConfig,
    load_generic_config,
    min_input_size,
    register_generic_variant,
    shape_trace,
)
from cnn.models import alexnet, basic, lenet  # noqa: F401  (registers the hand-written variants)

__all__ = [
    "GenericCNN",
    "GenericConfig",
    "VariantSpec",
    "count_parameters",
    "create_variant",
    "get_variant",
    "list_variants",
    "load_generic_config",
    "min_input_size",
    "register_generic_variant",
    "register_variant",
    "resolve_input_size",
    "shape_trace",
    "unregister_variant",
    "variant_table",
]
