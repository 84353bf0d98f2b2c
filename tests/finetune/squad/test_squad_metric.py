"""The official SQuAD scores on cases worked out by hand (evaluate-v1.1.py / evaluate-v2.0.py)."""
import pytest

from bertjax.finetune.squad import metric
from bertjax.finetune.squad.reader import Answer, Example


def _ex(qid, *refs):
    return Example(id=qid, title="t", question="?", context="",
                   answers=tuple(Answer(r, 0) for r in refs), is_impossible=not refs)


@pytest.mark.parametrize("text, normalised", [
    ("The  Broncos!", "broncos"),
    ("A. Smith", "smith"),                 # 'a.' loses its dot, then is an article
    ("An apple, the end.", "apple end"),
    ("theater anthem", "theater anthem"),  # articles only as whole words
    ("  Denver\tBroncos\n", "denver broncos"),
    ("Ça va—l'été", "ça va—lété"),         # only ASCII punctuation goes (not the em dash)
    ("?!", ""),
    ("", ""),
])
def test_normalize_answer(text, normalised):
    assert metric.normalize_answer(text) == normalised


def test_exact_and_f1_by_hand():
    assert metric.exact_match("the Denver Broncos.", "Denver Broncos") == 1
    # pred [carolina, panthers, team] vs [panthers]: P = 1/3, R = 1, F1 = 2PR/(P+R) = 0.5
    assert metric.f1_v1("the Carolina Panthers team", "Panthers") == pytest.approx(0.5)
    # bags: [b, b, c] vs [b, c, c] share one b and one c: P = R = 2/3
    assert metric.f1_v1("a b b c", "b c c") == pytest.approx(2 / 3)
    assert metric.f1_v1("Broncos", "Panthers") == 0
    # both normalise to nothing: v1.1 has F1 0 (no shared token), v2.0 has F1 1
    assert metric.f1_v1("", "?") == 0 and metric.exact_match("", "?") == 1
    assert metric.f1_v2("", "?") == 1 and metric.f1_v2("", "Broncos") == 0
    assert metric.f1_v2("the", "") == 1  # "the" normalises to nothing
    assert metric.f1_v2("Broncos win", "Broncos") == pytest.approx(2 / 3)


def test_evaluate_v1_max_over_references_and_missing_predictions():
    examples = [_ex("q1", "Denver Broncos", "The Broncos", "Broncos"),
                _ex("q2", "Carolina Panthers", "Panthers"),
                _ex("q3", "Santa Clara"),
                _ex("q4", "?")]
    predictions = {"q1": "broncos", "q2": "the Panthers team", "q4": ""}
    # q1: EM 1 (3rd ref); q2: EM 0, F1 max(2*(1/2*1/2)/(1), 2*(1/2)/(1.5)) = 2/3;
    # q3: missing, 0 but counted; q4: EM 1, F1 0 (punctuation-only reference, v1.1 rule)
    got = metric.evaluate_v1(examples, predictions)
    assert got == {"exact_match": pytest.approx(100 * 2 / 4),
                   "f1": pytest.approx(100 * (1 + 2 / 3) / 4)}
    with pytest.raises(ValueError, match="no questions"):
        metric.evaluate_v1([], {})


def _v2_case():
    examples = [_ex("a", "Denver Broncos", "Broncos"),   # answered exactly
                _ex("b", "Carolina Panthers"),            # half right
                _ex("c"),                                 # unanswerable, predicted empty
                _ex("d"),                                 # unanswerable, predicted an answer
                _ex("e", "?")]                            # reference normalises to nothing
    predictions = {"a": "the Broncos", "b": "Panthers", "c": "", "d": "Santa Clara", "e": ""}
    return examples, predictions


def test_evaluate_v2_by_hand():
    examples, predictions = _v2_case()
    # raw EM: a 1, b 0, c 1, d 0, e 1 (its only reference drops out: "" is right)
    # raw F1: a 1, b 2*(1*.5)/1.5 = 2/3, c 1, d 0, e 1
    got = metric.evaluate_v2(examples, predictions)
    assert got == pytest.approx({
        "exact": 100 * 3 / 5, "f1": 100 * (1 + 2 / 3 + 1 + 0 + 1) / 5, "total": 5,
        "HasAns_exact": 100 * 2 / 3, "HasAns_f1": 100 * (1 + 2 / 3 + 1) / 3, "HasAns_total": 3,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2})
    assert list(got) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
                         "NoAns_exact", "NoAns_f1", "NoAns_total"]
    with pytest.raises(ValueError, match=r"1 questions have no prediction \(e.g. \['e'\]\)"):
        metric.evaluate_v2(examples, {k: v for k, v in predictions.items() if k != "e"})


def test_evaluate_v2_thresholds_by_hand():
    examples, predictions = _v2_case()
    null_odds = {"a": -5.0, "b": 2.0, "c": 3.0, "d": 2.5, "e": 0.5}
    got = metric.evaluate_v2(examples, predictions, null_odds)
    # Odds above na_prob_thresh = 1 count as "no answer": b -> 0, c -> 1, d -> 1.
    assert got["exact"] == pytest.approx(100 * (1 + 0 + 1 + 1 + 1) / 5)
    assert got["f1"] == pytest.approx(100 * (1 + 0 + 1 + 1 + 1) / 5)
    assert got["HasAns_f1"] == pytest.approx(100 * 2 / 3) and got["NoAns_exact"] == 100
    # find_best_thresh starts from the 2 unanswerable questions, then by increasing odds:
    # EM: a +1 -> 3 (best, -5), e +1 -> 4 (best, 0.5), b +0, d -1 (predicted), c +0 -> 3
    assert got["best_exact"] == pytest.approx(100 * 4 / 5) and got["best_exact_thresh"] == 0.5
    # F1: a +1 -> 3, e +1 -> 4, b +2/3 -> 4.67 (best, 2.0), d -1, c 0
    assert got["best_f1"] == pytest.approx(100 * (4 + 2 / 3) / 5)
    assert got["best_f1_thresh"] == 2.0
    assert list(got)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]
    # a threshold no odds exceed leaves the raw scores
    raw = metric.evaluate_v2(examples, predictions, null_odds, na_prob_thresh=10.0)
    assert raw["exact"] == pytest.approx(60.0)
    with pytest.raises(ValueError, match="null_odds lacks 1 questions"):
        metric.evaluate_v2(examples, predictions, {k: 0.0 for k in "abcd"})
