"""A plugin method whose raw_weights() returns a numpy array (benchmarks/faults_round3.py)."""

import numpy as np

import lt_bench


class NumpyWeights(lt_bench.Method):
    """Uniform weights, as numpy."""

    def raw_weights(self):
        return np.ones(self.num_classes)


@lt_bench.hookimpl
def lt_bench_register_methods(register):
    register("np_weights", NumpyWeights)
