"""Merged models and their perplexity: merge, evaluate, batched evaluation, screening, sweep (+ backends),
score, uncertainty (how sure a ranking is), the proxy registry (`proxies/`).

Imports core .. train (never the verdict above it: refreshing fitted rows after scoring is the commands' job).
"""

from ablate.scoring import proxies
from ablate.scoring.batched import EvalWindows, ModelStack, window_stats
from ablate.scoring.ensemble import member_nll, mixed_nll, weight_gradient
from ablate.scoring.evaluate import evaluate_tokens, windows
from ablate.scoring.evaluated import score_proxy
from ablate.scoring.inplace import MemberSpace, export_mixture, merged_model
from ablate.scoring.merge import RunningSum, check_compatible, gray_code_order, merge_id, merge_members, parse_mixture
from ablate.scoring.mixtures import plan_masks
from ablate.scoring.score import score_built_models, score_reference_models
from ablate.scoring.screen import race, screen_candidates
from ablate.scoring.sweep import local_results, run_sweep
from ablate.scoring.sweep_segment import score_segment
from ablate.scoring.uncertainty import (bootstrap_values, describe_gap, gap_intervals, noise_floor, point_values,
                                        seed_warnings, window_tokens)
from ablate.scoring.verify import verify_pool

__all__ = ["merge_members", "merge_id", "parse_mixture", "check_compatible", "RunningSum", "gray_code_order",
           "evaluate_tokens", "windows", "EvalWindows", "ModelStack", "window_stats", "MemberSpace", "export_mixture",
           "merged_model", "score_reference_models", "score_built_models", "score_proxy", "screen_candidates", "race",
           "run_sweep", "local_results", "score_segment", "plan_masks", "member_nll", "mixed_nll", "weight_gradient",
           "bootstrap_values", "point_values", "gap_intervals", "noise_floor", "seed_warnings", "describe_gap",
           "window_tokens", "verify_pool", "proxies"]
