"""Straightforward formulations of the official code of each family, with its key
layout: the tests check our layers, backbones and converters against them and the
benchmarks time our operators beside them. The models never use them."""
