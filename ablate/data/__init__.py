"""Text in, tokens out: corpus sources (Debian packages, the user's files), eval sets, units, tokenizer identity.

Imports core and store (units and eval sets are pool files with sidecars).
"""

from ablate.data.corpus import build_debian_corpus, corpus_domains, fortunes_min_corpus, load_corpus, study_corpus
from ablate.data.tokenizer_id import check_import_tokenizer, tokenizer_id_of
from ablate.data.units import (eval_sets, load_eval_tokens, load_tokenizer, load_unit_tokens, seed_domains,
                               split_units, study_tokenizer, token_byte_lengths, unit_ids, unit_meta)

__all__ = ["study_corpus", "build_debian_corpus", "fortunes_min_corpus", "load_corpus", "corpus_domains",
           "split_units", "unit_ids", "unit_meta", "eval_sets", "load_eval_tokens", "load_unit_tokens",
           "load_tokenizer", "study_tokenizer", "token_byte_lengths", "seed_domains", "tokenizer_id_of",
           "check_import_tokenizer"]
