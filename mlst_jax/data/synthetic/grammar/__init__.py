"""Deterministic multi-way parallel sentences in nine languages (en, de, es, fr, it, nl, pt, ro, ru).

A sentence is first drawn as a language-neutral :class:`Spec` (pattern, subject, verb, object, place, adjective,
tense, time adverbial, ...) and then rendered by one small grammar per language. Every spec has exactly one
rendering per language, so the corpus is a clean n-way parallel set for speech-translation training and evaluation.

Patterns (``PATTERNS``)::

    transitive              Every morning my brother reads the old book.
    transitive_question     Does the man read the newspaper?
    transitive_negation     Our neighbor does not sell the big house.
    intransitive            Yesterday the girls stayed at the hotel.
    intransitive_question   Did her cat eat in the kitchen?
    intransitive_negation   She did not stay at the hotel.
    counted_objects         I see twenty-three cats.
    existential_indefinite  There is a big horse on the beach.
    existential_number      There are twenty-one books in the room.
    existential_negative    There is no bird in the garden.
    location                My uncle was at the school.
    location_question       Was she at the airport?
    predicative             Our chair is clean.
    predicative_negation    The stations are not big.
    predicative_question    Is his bag yellow?
    possessive              My brother's car is red.
    relative_clause         The man who buys the car works at the station.
    complement_clause       I know that the girl read the letter yesterday.

The lexicon (nouns with gender, plural and case forms; adjectives; verb paradigms), closed-class words, inflection
tables, number words and adverbials are data files under ``mlst_jax/data/synthetic/lexicon/``; this package holds
the rules that combine them (agreement, case, word order, articles, elision and contractions). Choices that a
language leaves open are fixed once: European Portuguese, Spanish from Spain with the preterite for the past, passé
composé / passato prossimo / perfect compus, German and Dutch perfect, Russian aspect chosen per verb; subject
pronouns are dropped for "I" and "we" in es/it/pt/ro; "they" is rendered masculine. To avoid gender guesses, "I"
never occurs in the past tense or with predicative adjectives, and possessives in objects never refer back to the
subject (Russian would need "свой"). Past-tense statements always carry a past time adverbial, so English
"read"/"cut" are never ambiguous.

The spec space is a union of disjoint products, so it is counted exactly (``num_distinct_sentences``) and sampled
uniformly within each pattern. It can be restricted to a named subset of the lexicon (``lexicon_subset``; the
``"demo"`` subset has 26 nouns, 10 adjectives, 16 verbs and numbers up to 12) for a task a small model learns
quickly. Ids are sha1 hashes of the spec, stable across runs and Python hash seeds.

Modules::

    lexicon     loads the lexicon data files; lexical queries (noun tags, determiners, adjectives per noun);
                named lexicon subsets (lexicon_subset: "full", "demo")
    specs       NP, Spec, Sentence, spec_id, the pattern table and subject agreement
    words       word joining, capitalization and number words (number_word)
    renderer    _Lang, the sentence assembly shared by all languages
    english     en renderer
    germanic    de and nl renderers
    romance     fr, es, it and pt renderers
    romanian    ro renderer
    russian     ru renderer
    languages   the renderer of every language and render()
    space       the spec space: counting (pattern_counts, num_distinct_sentences) and sampling (sample_sentences)
"""
from __future__ import annotations

from mlst_jax.data.synthetic.grammar.languages import render
from mlst_jax.data.synthetic.grammar.lexicon import (LANGS, POSS, PRONOUNS, LexiconSubset, lexicon_subset,
                                                     lexicon_subsets)
from mlst_jax.data.synthetic.grammar.space import (_space, num_distinct_sentences,  # noqa: F401 (_space: tests)
                                                   pattern_counts, sample_sentences)
from mlst_jax.data.synthetic.grammar.specs import NP, PATTERNS, Sentence, Spec, spec_id
from mlst_jax.data.synthetic.grammar.words import number_word

__all__ = ["LANGS", "PATTERNS", "PRONOUNS", "POSS", "NP", "Spec", "Sentence", "render", "sample_sentences",
           "num_distinct_sentences", "pattern_counts", "number_word", "spec_id", "LexiconSubset", "lexicon_subset",
           "lexicon_subsets"]
