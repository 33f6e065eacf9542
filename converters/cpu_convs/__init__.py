"""CPU forms of convolutions: rewrites XLA:CPU runs faster, applied to every `FeatureExtractor`.

==================  ==========================================================================
module              what
==================  ==========================================================================
`conv_forms`        the jaxpr rewrite: `cpu_conv_forms(fn)`, and `cpu_conv_forms_when_wanted`
                    (``FASTFEM_CPU_CONVS`` = auto | on | off) that every extractor's ``apply``
                    goes through
`depthwise`         depthwise convolution as a sum of strided slices (`depthwise_conv_taps`)
`pointwise`         1x1 convolution as a matrix product (`pointwise_conv_dot`)
==================  ==========================================================================

These modules depend on JAX only (no model library, no other converters module).
"""

from .conv_forms import ENV_VAR, cpu_conv_forms, cpu_conv_forms_when_wanted, cpu_forms_wanted

__all__ = ["ENV_VAR", "cpu_conv_forms", "cpu_conv_forms_when_wanted", "cpu_forms_wanted"]
