"""Which mixture to train: objectives over eval sets, the search over candidate mixtures (and how sure its
ranking is: ranks), and continuous weights on the simplex (`ablate optimize`: a typed plan, routes registered in
routes.py, one protocol every route follows in protocol.py: split, descent, held comparison, proxy error, gate).

Imports core .. scoring. Training what it finds (validation) is the workflows' job (workflows/).
"""

from ablate.optimize.ensemble_route import optimize_ensemble
from ablate.optimize.gradient import set_nll, window_nll
from ablate.optimize.merged_route import fit_values, optimize_merged
from ablate.optimize.objectives import Objective, parse_objective
from ablate.optimize.optimization import (by_domain, integer_tokens, plan_optimization, realized_verdict,
                                          run_optimization, stored_optimization)
from ablate.optimize.plan import Plan, WeightsBudget
from ablate.optimize.protocol import (MIN_ERROR_UNIONS, PRIOR_PROXY_ERROR, PRIOR_PROXY_ERROR_PCT, gate, proxy_error,
                                      split_windows)
from ablate.optimize.ranks import seed_notes
from ablate.optimize.search import beam_search, candidates, rank_scored
from ablate.optimize.simplex import mirror_step, project, repetition_caps, sparsify
from ablate.optimize.trained import calibration_values, split_logppl, trained_mixtures, weights_of

# (regression_route, the function, is not named here: it would hide the module of the same name)
__all__ = ["parse_objective", "Objective", "run_optimization", "plan_optimization", "stored_optimization",
           "Plan", "WeightsBudget", "protocol", "routes",
           "realized_verdict", "gate", "by_domain", "integer_tokens", "MIN_ERROR_UNIONS", "PRIOR_PROXY_ERROR",
           "PRIOR_PROXY_ERROR_PCT", "optimize_merged", "optimize_ensemble", "split_windows", "fit_values",
           "proxy_error", "set_nll", "window_nll", "candidates", "beam_search", "rank_scored",
           "seed_notes", "project", "mirror_step", "sparsify", "repetition_caps", "trained_mixtures",
           "calibration_values", "split_logppl", "weights_of"]
