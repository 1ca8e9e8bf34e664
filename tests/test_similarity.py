"""Free-text agreement: pairwise similarity of answers, codes in a cascade's calling order."""

import numpy as np

from racer.similarity import chain_codes, pairwise_agreement


def test_answers_that_differ_in_spacing_agree_and_different_code_does_not():
    texts = np.array(
        [["def f(x): return x + 1", "def f(x): return x+1", "SELECT name FROM users", None]],
        dtype=object,
    )
    agree = pairwise_agreement(texts)[0]
    assert agree.astype(int).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    # The threshold decides: at cosine 1 only identical texts agree.
    assert not pairwise_agreement(texts, threshold=1.0)[0, 0, 1]


def test_chain_codes_of_the_tiers_called_so_far_do_not_depend_on_later_tiers():
    rng = np.random.default_rng(0)
    n, m = 400, 5
    upper = rng.random((n, m, m)) < 0.5
    agree = upper | upper.transpose(0, 2, 1)
    answered = rng.random((n, m)) < 0.9
    agree &= answered[:, :, None] & answered[:, None, :]
    agree[:, np.arange(m), np.arange(m)] = answered
    chain = [3, 0, 4, 1]
    full = chain_codes(agree, chain)
    for size in range(1, len(chain) + 1):
        prefix = chain[:size]
        # The gateway knows only the tiers called: later tiers have no answer yet.
        known = agree.copy()
        later = [c for c in range(m) if c not in prefix]
        known[:, later, :] = False
        known[:, :, later] = False
        assert np.array_equal(chain_codes(known, prefix)[:, prefix], full[:, prefix])
    # A tier joins the earliest leader it agrees with, or leads its own group.
    row = np.zeros((1, m, m), dtype=bool)
    row[0, [3, 0, 4], [3, 0, 4]] = True
    row[0, 4, 0] = row[0, 0, 4] = True
    assert chain_codes(row, chain).tolist() == [[0, -2, -2, 3, 0]]


def test_remembered_rows_give_what_a_fresh_computation_gives():
    # pairwise_agreement remembers each row of answers; a row met again, alone or in
    # another batch, at another threshold or after the memo is emptied, agrees the same.
    import racer.similarity as similarity

    texts = np.array(
        [
            ["def f(x): return x + 1", "def f(x): return x+1", "SELECT 1"],
            ["print('a')", None, "print('a')  # same"],
            ["", "x = 1", "x = 2"],
        ],
        dtype=object,
    )
    first = similarity.pairwise_agreement(texts)
    again = similarity.pairwise_agreement(texts[[2, 0]])
    np.testing.assert_array_equal(again, first[[2, 0]])
    loose = similarity.pairwise_agreement(texts, threshold=0.0)
    assert loose[2, 1, 2] and not first[0, 0, 2]  # the threshold is part of what is remembered
    similarity._char_memo.clear()
    np.testing.assert_array_equal(similarity.pairwise_agreement(texts), first)
