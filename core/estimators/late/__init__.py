"""The late estimator: counts outcomes like naive, drawing only what can matter.

A CPU influences a trial individually only if it misses the 1 s REBOOT-vector wait
(c_i > T1, or dead); at the defaults that is 2.4e-4 of CPUs. Per trial this estimator draws
the number of late CPUs K ~ Binomial(n_cpus - 1, q), their ids, their draws given c_i > T1,
and the maximum of the other CPUs' clear times (one table lookup per component), then runs
core.vectorized's NMI walk over the late CPUs alone. core/README.md, "The late estimator",
derives it and states its accuracy.

Modules: `special` (vectorized normal tails, exact normal-tail draws), `quad` (vectorized
adaptive Gauss-Kronrod), `laws` (CDF, survival, density and atoms of the per-CPU laws),
`table` (inverse-CDF tables of a maximum), `latecpu` (exact draws of a late CPU), `plan`
(what is computed once per point), `chunk` (one chunk of the random stream), `estimator`
(the `Estimator` interface, replay). Nothing is imported here.
"""
