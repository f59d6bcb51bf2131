"""Search written once against the `Decoder` protocol: greedy, beam (n-best), sampling."""

from seqlab.decoding.beam import length_penalty
from seqlab.decoding.search import Hypothesis, beam_search, greedy_search, sample

__all__ = ["Hypothesis", "beam_search", "greedy_search", "length_penalty", "sample"]
