"""effjax: compressed, efficient models in JAX.

Train one supernet once; every compressed model is a configuration of it; a
multi-objective search picks the Pareto-optimal ones; an export turns any of them
into a small standalone model. See README.md for the architecture map.
"""

__version__ = "0.1.0"
