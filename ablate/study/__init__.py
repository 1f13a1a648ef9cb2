"""The study's vocabulary: its context (seed, eval sets, recipes, member ids) and its ground truths' budgets.

Imports core, store, data, models; nothing here trains. Training (train/), scoring, optimize and fidelity all
speak it, so `load_study` and `member_id` are the one answer to "which member is this unit".
"""

from ablate.core.lazy import lazy

__all__ = ["load_study", "Study", "Recipe", "member_id", "member_recipe", "normalize_units", "study_recipe_id",
           "BUDGETS", "QUESTIONS", "DEFAULT_TRUTH", "DEFAULT_METHOD", "Budget", "parse_budget"]
# light at start-up (the CLI loads study.budgets): torch (study.context) is imported when a name needs it
__getattr__ = lazy(__name__, {
    "context": ["load_study", "Study", "Recipe", "member_id", "member_recipe", "normalize_units", "study_recipe_id"],
    "budgets": ["BUDGETS", "QUESTIONS", "DEFAULT_TRUTH", "DEFAULT_METHOD", "Budget", "parse_budget"]})
