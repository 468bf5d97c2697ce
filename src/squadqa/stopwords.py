"""The one stopword list: function and question words.

They carry no evidence of where an answer is (the word-overlap baselines skip them) and make no
span worth asking about (span pretraining's content tokens exclude them). `s` is here for the
WordPiece split of "'s"; `'s` and `'` for the baselines' word split of it.
"""

from __future__ import annotations

_WORDS = """
    ' 's a about above after again against all also am an and any
    are as at be because been before being below between both but by can
    could did do does doing down during each few for from further had has
    have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not
    now of off on once only or other our ours ourselves out over own
    s same she should so some such than that the their theirs them themselves
    then there these they this those through to too under until up very was
    we were what when where which while who whom whose why will with would
    you your yours yourself yourselves
"""
STOPWORDS = frozenset(_WORDS.split())
