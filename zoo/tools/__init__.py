"""Developer tools behind ``python -m zoo``: a numerical gradient check (:mod:`zoo.tools.gradcheck`)
and a per-layer model summary (:mod:`zoo.tools.summary`), both for a registered model or any
``nn.Module`` class named by its dotted path (:mod:`zoo.tools.target`)."""

#: the largest relative error a gradient check accepts by default (1e-7: right; 1e-4: suspicious)
GRADCHECK_TOL = 1e-5
