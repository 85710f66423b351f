"""CNN variant registry; importing this package registers every built-in variant."""

from cnn.models.registry import (
    ENTRY_POINT_GROUP,
    VariantSpec,
    count_parameters,
    create_variant,
    get_variant,
    list_variants,
    load_entry_point_variants,
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
from cnn.models.plugins import (
    builtin_variants,
    check_variant_names,
    load_variant_file,
    load_variant_module,
    load_variants,
    module_reference,
    portable_plugins,
    variant_config_text,
    variant_fingerprint,
)
from cnn.models import alexnet, basic, lenet  # noqa: F401  (registers the hand-written variants)

__all__ = [
    "ENTRY_POINT_GROUP",
    "GenericCNN",
    "GenericConfig",
    "VariantSpec",
    "builtin_variants",
    "check_variant_names",
    "count_parameters",
    "create_variant",
    "get_variant",
    "list_variants",
    "load_entry_point_variants",
    "load_generic_config",
    "load_variant_file",
    "load_variant_module",
    "load_variants",
    "module_reference",
    "portable_plugins",
    "min_input_size",
    "register_generic_variant",
    "register_variant",
    "resolve_input_size",
    "shape_trace",
    "unregister_variant",
    "variant_config_text",
    "variant_fingerprint",
    "variant_table",
]
