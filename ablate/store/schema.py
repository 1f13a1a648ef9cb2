"""The index's schema: its tables, the views users query, and the schema's fingerprint.

How to run: not directly; ablate/store/index.py creates these in index.duckdb, and users read them:
    ablate sql "SELECT * FROM proxy_fidelity"
    ablate sql "SELECT * FROM budget_curve WHERE n <= 8"

Only DDL and the SQL fragments it is built from live here; the index's file, locks, writes and
rebuilds are ablate/store/index.py. Changing a table or view changes SCHEMA, and an index built with
another SCHEMA is rebuilt from the pool's files on its next use.
"""

from __future__ import annotations

import hashlib

# The columns of a measured row (results.Row), shared by the full and the screened table.
ROW_COLUMNS = """
        row_id VARCHAR PRIMARY KEY, mixture VARCHAR[], weights DOUBLE[], k INTEGER,
        uniform BOOLEAN, method VARCHAR, eval_set VARCHAR, eval_sha256 VARCHAR,
        n_tokens BIGINT, n_bytes BIGINT, nll_sum DOUBLE, ppl DOUBLE, bits_per_byte DOUBLE,
        eval_s DOUBLE, merge_s DOUBLE, energy_kwh DOUBLE, co2_kg DOUBLE, energy_method VARCHAR,
        flops DOUBLE, model_id VARCHAR, seed_id VARCHAR, device VARCHAR, replicate INTEGER, spec VARCHAR,
        budget VARCHAR, eval_precision VARCHAR, created_at TIMESTAMP"""

TABLES = {
    "units": """
        unit_id VARCHAR PRIMARY KEY, kind VARCHAR, domain VARCHAR, shard INTEGER,
        n_docs BIGINT, n_tokens BIGINT, n_bytes BIGINT, data_sha256 VARCHAR,
        tokenizer_id VARCHAR, path VARCHAR, source VARCHAR, contaminated_docs BIGINT, created_at TIMESTAMP""",
    "models": """
        model_id VARCHAR PRIMARY KEY, kind VARCHAR, units VARCHAR[], seed_id VARCHAR,
        replicate INTEGER, path VARCHAR, sha256 VARCHAR, n_params BIGINT, n_params_nonembed BIGINT,
        train_tokens BIGINT, steps INTEGER, final_loss DOUBLE, wall_s DOUBLE, cpu_s DOUBLE,
        energy_kwh DOUBLE, co2_kg DOUBLE, energy_method VARCHAR, energy_assumptions JSON,
        flops DOUBLE, flops_convention VARCHAR, device VARCHAR, config JSON, versions JSON,
        budget VARCHAR, budget_tokens BIGINT, weights DOUBLE[], draw JSON, recipe_id VARCHAR,
        created_at TIMESTAMP""",
    "mixture_perplexity": ROW_COLUMNS,
    # `--screen` (ablate/scoring/screen.py): candidates dropped on a prefix of an eval set; n_tokens is what the
    # prefix held. Apart from mixture_perplexity, so no view, fit or verdict meets a partial evaluation.
    "screened_perplexity": ROW_COLUMNS + """, screened BOOLEAN, screen_id VARCHAR, screen_round INTEGER,
        screen_windows INTEGER, full_windows INTEGER, confidence DOUBLE, leader_gap DOUBLE""",
    # Each measured row's per-window NLL sums (same row_id as its mixture_perplexity row), in window order: what
    # the rankings' paired bootstrap resamples (ablate/scoring/uncertainty.py). Rows from before it: absent.
    "window_losses": """
        row_id VARCHAR PRIMARY KEY, method VARCHAR, model_id VARCHAR, eval_set VARCHAR, eval_sha256 VARCHAR,
        n_windows INTEGER, window_nll DOUBLE[], created_at TIMESTAMP""",
    # A task's rows (ablate/scoring/tasks.py) with choices: each choice's NLL sum (layout order, eval/eval-<set>.layout.npy)
    # and per example whether the lowest NLL per byte is the answer; accuracy = their mean. Same row_id as the row.
    "task_examples": """
        row_id VARCHAR PRIMARY KEY, method VARCHAR, model_id VARCHAR, eval_set VARCHAR, eval_sha256 VARCHAR,
        n_examples INTEGER, correct BOOLEAN[], choice_nll DOUBLE[], accuracy DOUBLE, created_at TIMESTAMP""",
    # gap* = the candidate's objective minus #1's (log ppl) with its paired bootstrap interval over eval windows;
    # tied_top: that interval reaches 0; noise_floor: retraining noise from replicate unions (relative), NULL if none
    "searches": """
        row_id VARCHAR PRIMARY KEY, search_id VARCHAR, target VARCHAR, method VARCHAR, budget VARCHAR, rank INTEGER,
        mixture VARCHAR[], weights DOUBLE[], proxy_ppl DOUBLE, union_ppl DOUBLE, union_rank INTEGER,
        n_unions_known INTEGER, validated BOOLEAN, screened BOOLEAN, objective VARCHAR, created_at TIMESTAMP,
        gap DOUBLE, gap_low DOUBLE, gap_high DOUBLE, tied_top BOOLEAN, bootstrap INTEGER, noise_floor DOUBLE,
        within_noise BOOLEAN""",
    # `ablate optimize` (ablate/optimize/): one row per optimization; values in the objective's units (log ppl),
    # fit = the windows it optimized on, held = the rest. weights/tokens/epochs: what ablate recommends (uniform
    # when recommended = 'uniform'); optimized_*: the optimizer's weights, for reference. proxy_error: the RMS
    # over proxy_error_unions trained unions, only where there are 3 or more (gate_rule says which rule decided,
    # gate_threshold the held gain it had to exceed; calibrated_gain and calibration: the held gain on the trained
    # unions' line, a + b x gain, and its leave-one-out residual; recommended_old, gate_rule_old,
    # gate_threshold_old: the old gate (the proxy error's scale), kept beside it). candidates: the weights the
    # route offered, ranked on the fit windows, each with its held gain (route_weights: the descent's own optimum);
    # validated_candidates: those --validate K retrained, with their realized gains; recommended_by 'validation'
    # when they decided `recommended` (the gate's answer stays in gate_recommended). guards: each --max-loss
    # guard's held change and breach (%).
    # Validation rewrites the row (same id, newer created_at) with the retrained unions' realized objective and
    # its verdict; a plain rerun of the same optimization reuses the row. superseded_by: a validated row whose
    # weights a forced recompute changed, kept under its own id.
    "optimizations": """
        row_id VARCHAR PRIMARY KEY, route VARCHAR, objective VARCHAR, eval_sets VARCHAR[], units VARCHAR[],
        domains VARCHAR[], weights DOUBLE[], recommended VARCHAR, budget VARCHAR, budget_tokens BIGINT,
        tokens BIGINT[], epochs DOUBLE[], optimized_weights DOUBLE[], optimized_tokens BIGINT[],
        optimized_epochs DOUBLE[], max_epochs DOUBLE, fit_optimized DOUBLE, fit_uniform DOUBLE, held_optimized DOUBLE,
        held_uniform DOUBLE, held_gain DOUBLE, held_gain_low DOUBLE, held_gain_high DOUBLE, resolved BOOLEAN,
        guards_held BOOLEAN, guards JSON, proxy_error DOUBLE, proxy_error_unions INTEGER, gate_rule VARCHAR,
        gate_threshold DOUBLE, calibrated_gain DOUBLE, calibration JSON, gate_recommended VARCHAR,
        recommended_by VARCHAR, recommended_old VARCHAR,
        gate_rule_old VARCHAR, gate_threshold_old DOUBLE, route_weights DOUBLE[], candidates JSON,
        validated_candidates JSON, steps INTEGER, settings JSON,
        seconds DOUBLE, energy_kwh DOUBLE, co2_kg DOUBLE, energy_method VARCHAR, seed_id VARCHAR, validated BOOLEAN,
        union_optimized DOUBLE, union_uniform DOUBLE, union_best DOUBLE, union_best_mixture VARCHAR[],
        union_best_weights DOUBLE[], unions_compared INTEGER, noise_threshold DOUBLE, realized_gain DOUBLE,
        beats_uniform BOOLEAN, verdict VARCHAR, superseded_by VARCHAR, created_at TIMESTAMP""",
}

# Which question a ground truth answers, from its budget (budgets.QUESTIONS says the same in Python).
QUESTION_SQL = """CASE {b} WHEN 'unit' THEN 'equal compute: which composition is best at the budget of one unit?'
    WHEN 'sum' THEN 'add data: what if I add these units and train k x longer?'
    ELSE 'fixed budget (' || {b} || '): which composition is best at that many tokens?' END"""
# Proxy methods fitted on unions: their rows in the table are in-sample for the unions they used.
FITTED_SQL = "('calibrated', 'regression')"
ROUND_W = "list_transform({t}.weights, lambda x: round(x, 6))"

# Below this many mixtures with a truth, a ranking statistic says nothing (with 1 or 2 the proxy's
# pick is the best by chance half the time or more, and correlations are undefined or +-1): NULL.
MIN_MIXTURES = 3

# Views users query. Fidelity compares only multi-unit mixtures: for k=1 the merge *is*
# the unit model, which would inflate every correlation. One row per proxy row and ground
# truth: a union of the same units and weights, any budget (sum = k x one unit's tokens,
# unit = one unit's tokens); a fitted proxy's row only meets the truth it was fitted for.
VIEWS = {
    # the README and the commands call them members: the same rows under that name (`models` stays, as before)
    "members": "SELECT * FROM models",
    # a task's rows: the answer's bits per byte (the objective every ranking reads) beside accuracy
    "task_accuracy": """
        SELECT m.method, m.mixture, m.weights, m.k, m.eval_set, m.budget, m.replicate, m.bits_per_byte,
               t.accuracy, t.n_examples, m.model_id, m.row_id
        FROM mixture_perplexity m JOIN task_examples t USING (row_id)""",
    "mixture_vs_union": f"""
        SELECT m.mixture, m.weights, m.k, m.uniform, m.eval_set, m.method AS proxy,
               m.method IN {FITTED_SQL} AS in_sample, coalesce(u.budget, 'sum') AS budget,
               {QUESTION_SQL.format(b="coalesce(u.budget, 'sum')")} AS question,
               m.ppl AS merged_ppl, u.ppl AS union_ppl,
               m.bits_per_byte AS merged_bpb, u.bits_per_byte AS union_bpb,
               m.ppl / u.ppl - 1 AS merged_excess, s.ppl AS seed_ppl
        FROM mixture_perplexity m
        JOIN mixture_perplexity u ON u.method = 'union' AND u.mixture = m.mixture AND u.eval_set = m.eval_set
             AND coalesce(u.replicate, 0) = 0 AND {ROUND_W.format(t="u")} = {ROUND_W.format(t="m")}
             AND (m.budget IS NULL OR m.budget = coalesce(u.budget, 'sum'))
        LEFT JOIN mixture_perplexity s ON s.method = 'seed' AND s.eval_set = m.eval_set AND s.seed_id = m.seed_id
        WHERE m.method NOT IN ('union', 'seed')""",
    "proxy_fidelity": f"""
        WITH j AS (
            SELECT budget, question, proxy, in_sample, eval_set, mixture, ln(merged_ppl) AS lm, ln(union_ppl) AS lu
            FROM mixture_vs_union WHERE k >= 2 AND uniform),
        r AS (
            SELECT *, rank() OVER (PARTITION BY budget, proxy, eval_set ORDER BY lm) AS rm,
                      rank() OVER (PARTITION BY budget, proxy, eval_set ORDER BY lu) AS ru FROM j),
        g AS (
            SELECT budget, any_value(question) AS question, proxy, bool_or(in_sample) AS in_sample, eval_set,
                   count(*) AS n_mixtures, corr(lm, lu) AS pearson_log_ppl, corr(rm, ru) AS spearman_log_ppl,
                   arg_min(mixture, lm) AS proxy_best, arg_min(mixture, lu) AS true_best,
                   arg_min(lu, lm) AS lu_of_proxy_best, min(lu) AS lu_best
            FROM r GROUP BY budget, proxy, eval_set)
        SELECT budget, question, proxy, in_sample, eval_set, n_mixtures,
               CASE WHEN n_mixtures >= {MIN_MIXTURES} THEN pearson_log_ppl END AS pearson_log_ppl,
               CASE WHEN n_mixtures >= {MIN_MIXTURES} THEN spearman_log_ppl END AS spearman_log_ppl,
               proxy_best, true_best,
               CASE WHEN n_mixtures >= {MIN_MIXTURES} THEN proxy_best = true_best END AS top1_agree,
               CASE WHEN n_mixtures >= {MIN_MIXTURES} THEN exp(lu_of_proxy_best - lu_best) - 1 END AS regret
        FROM g ORDER BY budget DESC, proxy, eval_set""",
    # Show Your Work (Dodge et al. 2019): expected best union ppl after trying n random
    # mixtures, E = Σ v(i)·[(i/N)^n − ((i−1)/N)^n] with v sorted worst→best. Retraining finds
    # the true best of its n; the simulation picks its n's proxy-best, whose *true* ppl counts.
    # Per ground truth (budget), for the raw merged proxy.
    "budget_curve": """
        WITH r AS (
            SELECT budget, any_value(question) OVER (PARTITION BY budget) AS question, eval_set, union_ppl AS v,
                   row_number() OVER (PARTITION BY budget, eval_set ORDER BY union_ppl DESC) AS i_true,
                   row_number() OVER (PARTITION BY budget, eval_set ORDER BY merged_ppl DESC, union_ppl DESC) AS i_proxy,
                   count(*) OVER (PARTITION BY budget, eval_set) AS big_n
            FROM mixture_vs_union WHERE k >= 2 AND uniform AND proxy = 'merged'),
        p AS (
            SELECT r.budget, r.question, r.eval_set, g.n, r.v,
                   pow(r.i_true / r.big_n, g.n) - pow((r.i_true - 1) / r.big_n, g.n) AS p_true,
                   pow(r.i_proxy / r.big_n, g.n) - pow((r.i_proxy - 1) / r.big_n, g.n) AS p_proxy
            FROM r JOIN (SELECT range AS n FROM range(1, 1025)) g ON g.n <= r.big_n),
        cu AS (
            SELECT coalesce(budget, 'sum') AS budget, recipe_id, avg(energy_kwh) AS union_kwh,
                   avg(flops) AS union_flops
            FROM models WHERE kind = 'union' AND coalesce(replicate, 0) = 0 GROUP BY ALL),
        e AS (
            SELECT sum(energy_kwh) / count(DISTINCT mixture) AS eval_kwh, sum(flops) / count(DISTINCT mixture)
                   AS eval_flops FROM mixture_perplexity WHERE method = 'merged' AND uniform),
        c AS (  -- per training recipe, as in ablation_cost: another recipe's members are not this study's
            SELECT m.recipe_id, sum(m.energy_kwh) AS units_kwh, sum(m.flops) AS units_flops,
                   any_value(e.eval_kwh) AS eval_kwh, any_value(e.eval_flops) AS eval_flops
            FROM models m, e WHERE m.kind = 'unit' AND coalesce(m.replicate, 0) = 0 GROUP BY m.recipe_id)
        SELECT p.budget, any_value(p.question) AS question, c.recipe_id, p.eval_set, p.n,
               sum(p.v * p.p_true) AS retrain_expected_best_ppl,
               sqrt(greatest(sum(p.v * p.v * p.p_true) - pow(sum(p.v * p.p_true), 2), 0)) AS retrain_sd,
               sum(p.v * p.p_proxy) AS proxy_expected_best_ppl,
               sqrt(greatest(sum(p.v * p.v * p.p_proxy) - pow(sum(p.v * p.p_proxy), 2), 0)) AS proxy_sd,
               any_value(p.n * cu.union_kwh) AS retrain_kwh, any_value(c.units_kwh + p.n * c.eval_kwh) AS sim_kwh,
               any_value(p.n * cu.union_flops) AS retrain_flops,
               any_value(c.units_flops + p.n * c.eval_flops) AS sim_flops
        FROM p CROSS JOIN c LEFT JOIN cu ON cu.budget = p.budget AND cu.recipe_id IS NOT DISTINCT FROM c.recipe_id
        GROUP BY p.budget, c.recipe_id, p.eval_set, p.n ORDER BY p.budget DESC, c.recipe_id, p.eval_set, p.n""",
    # What a screened run spent on the candidates it dropped (their rows are not in mixture_perplexity,
    # so ablation_cost does not see them): per screen and eval set, tokens, seconds and energy.
    "screening_cost": """
        SELECT screen_id, eval_set, count(*) AS dropped, sum(n_tokens) AS dropped_tokens,
               sum(eval_s + coalesce(merge_s, 0)) AS dropped_s, sum(energy_kwh) AS dropped_kwh,
               sum(flops) AS dropped_flops, any_value(energy_method) AS energy_method, min(created_at) AS created_at
        FROM screened_perplexity GROUP BY screen_id, eval_set ORDER BY created_at, eval_set""",
    # Priced per training recipe (seed_id, recipe_id: index.recipe_id): a unit's members trained with another
    # recipe (other epochs, lr) are other studies' spending, never summed into this one's. A mixture appears
    # under a recipe only when that recipe has a member for each of its units. Merged evaluations carry no
    # recipe, so eval costs are per seed and mixture (the report prices the study's own merges exactly).
    "ablation_cost": """
        WITH cost AS (
            SELECT model_id, units, kind, wall_s, energy_kwh, co2_kg, flops, seed_id, recipe_id,
                   coalesce(budget, 'sum') AS budget, coalesce(replicate, 0) AS replicate FROM models
            WHERE kind IN ('unit', 'union') AND recipe_id IS NOT NULL),
        members AS (SELECT seed_id, recipe_id, units[1] AS unit, energy_kwh, wall_s, flops FROM cost
                    WHERE kind = 'unit' AND len(units) = 1 AND replicate = 0),
        ev AS (
            SELECT seed_id, mixture, any_value(k) AS k, sum(energy_kwh) AS eval_kwh,
                   sum(eval_s + coalesce(merge_s, 0)) AS eval_s, sum(flops) AS eval_flops
            FROM mixture_perplexity WHERE method = 'merged' AND uniform GROUP BY seed_id, mixture),
        sim AS (
            SELECT c.seed_id, c.recipe_id, x.mixture, x.k, sum(c.energy_kwh) AS train_kwh, sum(c.wall_s) AS train_s,
                   sum(c.flops) AS train_flops, any_value(x.eval_kwh) AS eval_kwh, any_value(x.eval_s) AS eval_s,
                   any_value(x.eval_flops) AS eval_flops
            FROM ev x JOIN members c ON c.seed_id = x.seed_id AND list_contains(x.mixture, c.unit)
            GROUP BY c.seed_id, c.recipe_id, x.mixture, x.k HAVING count(*) = x.k),
        ret AS (  -- one retraining per ground truth: k x budget (sum) and one unit's budget (unit)
            SELECT seed_id, recipe_id, units AS mixture,
                   sum(energy_kwh) FILTER (WHERE budget = 'sum') AS retrain_kwh,
                   sum(wall_s) FILTER (WHERE budget = 'sum') AS retrain_s,
                   sum(flops) FILTER (WHERE budget = 'sum') AS retrain_flops,
                   sum(energy_kwh) FILTER (WHERE budget = 'unit' OR kind = 'unit') AS fixed_budget_kwh,
                   sum(wall_s) FILTER (WHERE budget = 'unit' OR kind = 'unit') AS fixed_budget_s
            FROM cost WHERE replicate = 0 AND budget IN ('sum', 'unit') GROUP BY seed_id, recipe_id, units)
        SELECT s.seed_id, s.recipe_id, s.mixture, s.k, s.train_kwh AS unit_train_kwh, s.eval_kwh AS merged_eval_kwh,
               s.train_s AS unit_train_s, s.eval_s AS merged_eval_s,
               s.train_flops AS unit_train_flops, s.eval_flops AS merged_eval_flops,
               r.retrain_kwh, r.retrain_s, r.retrain_flops, r.fixed_budget_kwh, r.fixed_budget_s,
               sum(coalesce(s.eval_kwh, 0)) OVER w AS cum_sim_eval_kwh,
               sum(coalesce(r.retrain_kwh, 0)) OVER w AS cum_retrain_kwh,
               sum(coalesce(r.retrain_flops, 0)) OVER w AS cum_retrain_flops,
               sum(coalesce(s.eval_flops, 0)) OVER w AS cum_sim_eval_flops
        FROM sim s LEFT JOIN ret r ON r.seed_id = s.seed_id AND r.recipe_id = s.recipe_id AND r.mixture = s.mixture
        WINDOW w AS (PARTITION BY s.seed_id, s.recipe_id ORDER BY s.k, array_to_string(s.mixture, ',')
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
        ORDER BY s.seed_id, s.recipe_id, s.k, array_to_string(s.mixture, ',')""",
}


# The index is derived data, so a schema change is handled by rebuilding it from the files.
SCHEMA = hashlib.sha256(repr((TABLES, VIEWS)).encode()).hexdigest()[:12]
