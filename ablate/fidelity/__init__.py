"""How far to trust the proxy: calibration and the noise floor, the protocol's scoring, the report and plots.

Imports core .. optimize.
"""

from ablate.fidelity.calibrate import fidelity, held_out, plan_unions, ranking_quality, refresh, suggest_unions
from ablate.fidelity.lengths import parse_steps
from ablate.fidelity.markdown import LENGTHS_HEADING, markdown_table, own_sections, replace_section
from ablate.fidelity.plots import fidelity_figure
from ablate.fidelity.protocol import score_study, write_markdown
from ablate.fidelity.report import Priced, cost_markdown, costs, priced, verdict_markdown, write_report
from ablate.fidelity.study_section import write_study_section
from ablate.fidelity.weights_report import write_section

__all__ = ["fidelity", "refresh", "plan_unions", "suggest_unions", "held_out", "ranking_quality", "score_study",
           "write_markdown", "priced", "Priced", "costs", "cost_markdown", "verdict_markdown", "write_report",
           "write_study_section", "write_section", "parse_steps", "markdown_table", "replace_section",
           "own_sections", "LENGTHS_HEADING", "fidelity_figure"]
