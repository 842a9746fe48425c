"""Independent oracles: naive loops and dense-matrix forms that share no code with the kernels."""
